"""`check_app`: find the parameters where FastAPI silently injects its own collector.

FastAPI injects a fresh `fastapi.BackgroundTasks()` into any parameter annotated with a subclass
of Starlette's `BackgroundTasks` that has no `Depends`. `afterward.BackgroundTasks` is such a
subclass, so `background_tasks: afterward.BackgroundTasks` (or a subclass of it) in a path
operation or a dependency quietly opts out of afterward: no error, no warning, FastAPI's
semantics. Nothing in that path calls afterward's code (FastAPI never instantiates the annotated
class, and its `issubclass` check goes through `type`), so the only place to see it is the app's
routes, once they are defined: a test, the app's startup, or the middleware's startup.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, cast, get_args, get_origin

import fastapi.routing
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_typed_signature
from fastapi.params import Depends
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import BaseRoute, Host, Mount

import afterward
from afterward._callables import task_name

__all__ = ["OptOut", "OptOutWarning", "check_app"]

_FIX = (
    "Import the drop-in instead: `from afterward.fastapi import BackgroundTasks` (or, for a "
    "collector with options, Annotated[afterward.BackgroundTasks, tasks_from(factory)])."
)


class OptOutWarning(UserWarning):
    """A parameter gets FastAPI's own `BackgroundTasks` where afterward's was meant."""


@dataclass(frozen=True)
class OptOut:
    """One parameter annotated with `afterward.BackgroundTasks` (or a subclass) without `Depends`.

    Attributes:
        route: The route, e.g. `POST /items` or `WEBSOCKET /ws` (with any mount prefix).
        endpoint: `module.qualname` of the route's path operation function.
        function: `module.qualname` of the function that declares the parameter: the endpoint
            itself or one of its dependencies.
        parameter: The parameter's name.
        annotation: The annotated class.
    """

    route: str
    endpoint: str
    function: str
    parameter: str
    annotation: type

    def __str__(self) -> str:
        where = "" if self.function == self.endpoint else f", a dependency of {self.endpoint}"
        return (
            f"{self.function} (route {self.route}{where}) declares `{self.parameter}: "
            f"{self.annotation.__module__}.{self.annotation.__qualname__}` without Depends, so "
            f"FastAPI injects its own fastapi.BackgroundTasks there and its tasks run without "
            f"afterward. {_FIX}"
        )


def check_app(app: Any, *, warn: bool = True) -> list[OptOut]:
    """Find every parameter where FastAPI injects its own collector instead of afterward's.

    Walks every route of `app` (HTTP and websocket, included routers, mounted sub-apps) and the
    whole tree of each route's dependencies, and reports each parameter annotated with
    `afterward.BackgroundTasks` or a subclass without `Depends`. In a test:

        assert check_app(app) == []

    Args:
        app: A FastAPI or Starlette app, an `APIRouter`, or anything with `routes`.
        warn: Also emit one `OptOutWarning` per problem, naming the endpoint and the fix.

    Returns:
        The problems found, in route order; empty when every collector is afterward's.
    """
    problems = list(_find(_routes_of(app), ""))
    if warn:
        for problem in problems:
            warnings.warn(str(problem), OptOutWarning, stacklevel=2)
    return problems


def _routes_of(app: Any) -> Sequence[BaseRoute]:
    routes = getattr(app, "routes", None)
    if routes is None:
        raise TypeError(
            f"check_app() needs a FastAPI or Starlette app or a router (anything with `routes`), "
            f"got {app!r}."
        )
    return list(routes)


def _find(routes: Iterable[BaseRoute], prefix: str) -> Iterator[OptOut]:
    for route in _effective(routes):
        original = getattr(route, "original_route", route)
        if isinstance(original, APIRoute):
            methods = ",".join(sorted(route.methods or ()))
            yield from _find_in(route.dependant, f"{methods} {prefix}{route.path}", route.endpoint)
        elif isinstance(original, APIWebSocketRoute):
            yield from _find_in(route.dependant, f"WEBSOCKET {prefix}{route.path}", route.endpoint)
        elif isinstance(original, Mount):
            yield from _find(original.routes, prefix + route.path)
        elif isinstance(original, Host):
            yield from _find(original.routes, prefix)


def _effective(routes: Iterable[BaseRoute]) -> Iterable[Any]:
    # Since FastAPI 0.16x an included router is one lazy route; `iter_route_contexts` (what its
    # OpenAPI generation uses) yields each route as included: prefix, router dependencies and all.
    # Earlier versions copy the routes into the app, so they are the effective ones already.
    iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if iter_route_contexts is None:  # pragma: no cover - FastAPI < 0.16x
        return routes
    return cast(Iterable[Any], iter_route_contexts(list(routes)))


def _find_in(root: Dependant, route: str, endpoint: Callable[..., Any]) -> Iterator[OptOut]:
    endpoint_name = task_name(endpoint)
    seen: set[tuple[int, str]] = set()
    stack = [root]
    while stack:
        dependant = stack.pop(0)
        stack[:0] = dependant.dependencies
        if dependant.call is None:  # pragma: no cover - FastAPI always sets it
            continue
        for parameter, annotation in _opted_out(dependant.call):
            key = (id(dependant.call), parameter)
            if key not in seen:
                seen.add(key)
                function = task_name(dependant.call)
                yield OptOut(route, endpoint_name, function, parameter, annotation)


def _opted_out(call: Callable[..., Any]) -> Iterator[tuple[str, type]]:
    try:
        # FastAPI's own reading of the signature, string annotations resolved as it does.
        signature = get_typed_signature(call)
    except Exception:  # pragma: no cover - FastAPI would have failed on it first
        return
    for parameter in signature.parameters.values():
        annotation = parameter.annotation
        metadata: tuple[object, ...] = ()
        if get_origin(annotation) is Annotated:
            annotation, *rest = get_args(annotation)
            metadata = tuple(rest)
        if isinstance(parameter.default, Depends) or any(
            isinstance(item, Depends) for item in metadata
        ):
            continue
        if isinstance(annotation, type) and issubclass(annotation, afterward.BackgroundTasks):
            yield parameter.name, annotation
