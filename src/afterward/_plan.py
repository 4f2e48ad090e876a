"""What `inject` decides once: how to resolve each parameter, how to call each function.

The signature of the endpoint and of every dependency below it is analysed once into a tree of
`Plan`s; a request only walks that tree (`_inject.py`). Anything a plan cannot resolve is a
`TypeError` here, naming the parameter, instead of an error in production.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, NamedTuple, get_args, get_origin

from starlette.background import BackgroundTasks as _StarletteTasks
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from ._params import Dependency, ValueParam
from ._tasks import BackgroundTasks

__all__ = ["Kind", "Plan", "analyse", "callable_name", "collector_class"]


class Kind(enum.Enum):
    """How a function is called, and whether it is a generator (a `yield` dependency)."""

    ASYNC = enum.auto()
    SYNC = enum.auto()  # in a worker thread
    ASYNC_GENERATOR = enum.auto()
    SYNC_GENERATOR = enum.auto()  # entered and closed in worker threads


class DependencyParam(NamedTuple):
    """A parameter whose value is another function's result (`Depends(...)`)."""

    position: int  # its place in the signature
    plan: Plan
    use_cache: bool


class Plan:
    """How to call one function (the endpoint or a dependency) for a request."""

    __slots__ = (
        "call",
        "collector_slots",
        "dependencies",
        "direct",
        "func",
        "keyword_only",
        "kind",
        "request_slots",
        "size",
        "tasks_classes",
        "values",
    )

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.kind = _kind_of(func)
        # What `invoke` calls: generators become context managers once, here.
        self.call: Callable[..., Any] = func
        if self.kind is Kind.ASYNC_GENERATOR:
            self.call = contextlib.asynccontextmanager(func)
        elif self.kind is Kind.SYNC_GENERATOR:
            self.call = contextlib.contextmanager(func)
        # A request resolves the parameters into a list in the signature's order (each kind of
        # parameter below knows its place in it), and passes them by position, but for the
        # keyword-only ones, which end the list. A call by position costs 1,000 instructions
        # less than one by keyword (`f(**kwargs)`, two parameters; callgrind).
        self.size = 0  # how many parameters
        # The names of the last ones (all of them for a function that is not called by position,
        # see `_takes_its_signature`).
        self.keyword_only: tuple[str, ...] = ()
        self.dependencies: list[DependencyParam] = []
        self.values: list[tuple[int, ValueParam]] = []
        self.collector_slots: list[int] = []
        self.tasks_classes: list[type[_StarletteTasks]] = []
        self.request_slots: list[int] = []
        # Awaited in place, without a helper coroutine: an async function, all by position.
        self.direct = False


def callable_name(func: object) -> str:
    """Return the name of a function, partial or callable instance, for messages."""
    func = _impartial(func)
    name = getattr(func, "__qualname__", None)
    return name if isinstance(name, str) else type(func).__qualname__


def analyse(func: Callable[..., Any], seen: tuple[Callable[..., Any], ...] = ()) -> Plan:
    """Return the plan of `func` and, recursively, of its dependencies.

    Raises:
        TypeError: a parameter cannot be resolved, or the dependencies form a cycle.
    """
    if func in seen:
        chain = " -> ".join(callable_name(f) for f in (*seen, func))
        raise TypeError(f"inject(): circular dependency: {chain}.")
    plan = Plan(func)
    owner = callable_name(func)
    by_position = _takes_its_signature(func)
    for parameter in _signature(func, owner).parameters.values():
        where = f"parameter {parameter.name!r} of {owner}"
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(
                f"inject() cannot resolve {where}: *args and **kwargs have no request value. "
                f"Declare each parameter by name."
            )
        if parameter.kind is parameter.KEYWORD_ONLY or (
            not by_position and parameter.kind is not parameter.POSITIONAL_ONLY
        ):
            plan.keyword_only += (parameter.name,)
        _add_parameter(plan, parameter, plan.size, where, (*seen, func))
        plan.size += 1
    plan.direct = plan.kind is Kind.ASYNC and not plan.keyword_only
    return plan


def _takes_its_signature(func: Callable[..., Any]) -> bool:
    """Whether `func` takes the parameters its signature shows: a plain function (or a partial
    of one, or a method), not a `functools.wraps` wrapper or an object with `__signature__`.

    Only such a function is called by position: a wrapper may take `**kwargs` alone, a class
    (a pydantic model, say) may take keywords alone, whatever signature they show, and FastAPI,
    which they were written for, calls by keyword.
    """
    target = _impartial(func)
    if inspect.ismethod(target):
        target = target.__func__
    return (
        inspect.isfunction(target)
        and not hasattr(target, "__wrapped__")
        and not hasattr(target, "__signature__")
    )


def refuse_methods(func: Callable[..., Any]) -> None:
    """Refuse a method (an `HTTPEndpoint`'s `get`): Starlette would pass it `self` and the request.

    Raises:
        TypeError: the first parameter is an unannotated `self` or `cls`.
    """
    first = next(iter(inspect.signature(func).parameters.values()), None)
    if (
        first is not None
        and first.name in ("self", "cls")
        and first.annotation is first.empty
        and first.kind is not first.KEYWORD_ONLY
    ):
        raise TypeError(
            f"inject() takes a function, not a method: {callable_name(func)} has a first "
            f"parameter {first.name!r}. inject does not support HTTPEndpoint methods; route a "
            f"module-level function instead: Route(path, inject(function))."
        )


def collector_class(plan: Plan, func: Callable[..., Any]) -> type[BackgroundTasks]:
    """Pick one class for the request's collector that satisfies every `BackgroundTasks` hint.

    Raises:
        TypeError: no afterward collector class is a subclass of every class asked for.
    """
    wanted: list[type[_StarletteTasks]] = []
    stack = [plan]
    while stack:
        current = stack.pop()
        wanted.extend(current.tasks_classes)
        stack.extend(dependency.plan for dependency in current.dependencies)
    candidates = [cls for cls in wanted if issubclass(cls, BackgroundTasks)] or [BackgroundTasks]
    for candidate in candidates:
        if all(issubclass(candidate, cls) for cls in wanted):
            return candidate
    names = ", ".join(sorted({cls.__qualname__ for cls in wanted}))
    raise TypeError(
        f"inject(): {callable_name(func)} and its dependencies ask for background-task "
        f"collectors of classes that no single afterward collector can be ({names}). One request "
        f"has one collector: annotate with afterward.BackgroundTasks or one subclass of it."
    )


def _impartial(func: Any) -> Any:
    while isinstance(func, functools.partial):
        func = func.func
    return func


def _kind_of(func: Callable[..., Any]) -> Kind:
    # Classified as FastAPI does: through partials, through `functools.wraps` wrappers, and a
    # callable instance by its `__call__`.
    target = _impartial(func)
    if not inspect.isroutine(target) and not inspect.isclass(target):
        target = _impartial(target.__call__)
    candidates = (target, inspect.unwrap(target))
    if any(inspect.isasyncgenfunction(c) for c in candidates):
        return Kind.ASYNC_GENERATOR
    if any(inspect.isgeneratorfunction(c) for c in candidates):
        return Kind.SYNC_GENERATOR
    if inspect.isclass(target):
        return Kind.SYNC  # calling a class constructs an instance
    if any(inspect.iscoroutinefunction(c) for c in candidates):
        return Kind.ASYNC
    return Kind.SYNC


def _signature(func: Callable[..., Any], owner: str) -> inspect.Signature:
    try:
        return inspect.signature(func, eval_str=True)
    except NameError:
        pass
    # Some annotation names a local (or a not-yet-defined) object. Evaluate them one by one: one
    # whose parameter has a `Depends(...)` default is not needed, so it need not resolve.
    signature = inspect.signature(func)
    namespace = getattr(inspect.unwrap(_impartial(func)), "__globals__", {})
    parameters = []
    for parameter in signature.parameters.values():
        annotation = parameter.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # what eval_str does, per parameter
            except NameError as exc:
                if not isinstance(parameter.default, Dependency):
                    raise TypeError(
                        f"inject() cannot read the annotation of parameter {parameter.name!r} "
                        f"of {owner}: {exc}. Define the names annotations use at module level "
                        f"(they are looked up there, as FastAPI does)."
                    ) from exc
                annotation = parameter.empty
        parameters.append(parameter.replace(annotation=annotation))
    return signature.replace(parameters=parameters)


def _add_parameter(
    plan: Plan,
    parameter: inspect.Parameter,
    index: int,
    where: str,
    seen: tuple[Callable[..., Any], ...],
) -> None:
    annotation = parameter.annotation
    markers: list[Any] = []
    if get_origin(annotation) is Annotated:
        annotation, *markers = get_args(annotation)
    dependencies = [m for m in markers if isinstance(m, Dependency)]
    if isinstance(parameter.default, Dependency):
        dependencies.append(parameter.default)
    if len(dependencies) > 1:
        raise TypeError(f"inject(): {where} declares Depends() more than once; keep one.")
    if dependencies:
        dependency = dependencies[0]
        target = dependency.dependency
        if target is None:
            if not callable(annotation):
                raise TypeError(
                    f"inject(): {where} uses Depends() without a callable, and its annotation "
                    f"{annotation!r} cannot be called. Write Depends(some_function)."
                )
            target = annotation
        sub = analyse(target, seen)
        plan.dependencies.append(DependencyParam(index, sub, dependency.use_cache))
        return
    if inspect.isclass(annotation):
        if issubclass(annotation, _StarletteTasks):
            plan.collector_slots.append(index)
            plan.tasks_classes.append(annotation)
            return
        if issubclass(annotation, WebSocket):
            raise TypeError(f"inject() cannot resolve {where}: inject is for HTTP endpoints.")
        if issubclass(annotation, HTTPConnection):
            plan.request_slots.append(index)
            return
    empty = parameter.empty
    try:
        value = ValueParam(
            parameter.name,
            Any if annotation is empty else annotation,
            None if parameter.default is empty else parameter.default,
            parameter.default is empty,
        )
    except TypeError:
        raise TypeError(
            f"inject() cannot resolve {where}: its annotation {annotation!r} is not one that can "
            f"be read from the path or query string (str, int, float, bool, or one of them "
            f"| None), nor BackgroundTasks, Request or Depends(...). Compute it in a dependency: "
            f"{parameter.name}: Annotated[..., Depends(get_{parameter.name})]."
        ) from None
    plan.values.append((index, value))
