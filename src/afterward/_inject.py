"""`inject`: typed parameters, `Depends` and `BackgroundTasks` for plain Starlette endpoints.

The signature of the endpoint and of every dependency below it is analysed once, when `inject` is
called, into a tree of `_Plan`s; a request only walks that tree. Anything the plan cannot
resolve is a `TypeError` then, naming the parameter, instead of an error in production.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Annotated, Any, cast, get_args, get_origin

from anyio import to_thread
from starlette.background import BackgroundTasks as _StarletteTasks
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from ._attach import attach
from ._limiter import request_hop_limiter
from ._params import Dependency, ValueParam
from ._report import level_for, log_not_run
from ._runner import run_tasks
from ._tasks import BackgroundTasks

__all__ = ["inject"]

logger = logging.getLogger("afterward")

# What a parameter is resolved from.
_TASKS, _REQUEST, _DEPENDENCY, _VALUE = range(4)

_NO_PARAMS: dict[str, Any] = {}
_NOT_CACHED = object()

# Returned instead of a value, or a call's result, when a request value failed validation.
_INVALID: Any = type("_Invalid", (), {"__repr__": lambda self: "<invalid>"})()


class _Plan:
    """How to call one function (the endpoint or a dependency) for a request."""

    __slots__ = (
        "call",
        "dependencies",
        "direct",
        "func",
        "is_async",
        "kind",
        "params",
        "positional",
        "simple",
    )

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.params: list[tuple[str, int, Any]] = []
        self.positional = 0  # leading parameters that must be passed by position
        self.simple: list[tuple[str, int, Any]] = []  # resolved without awaiting anything
        self.dependencies: list[tuple[str, tuple[_Plan, bool]]] = []
        # A callable instance is classified by its __call__ method.
        target: Any = func
        if not inspect.isroutine(func) and not inspect.isclass(func):
            target = func.__call__  # type: ignore[operator]
        if inspect.isasyncgenfunction(target):
            self.kind, self.is_async = "generator", True
            self.call: Callable[..., Any] = contextlib.asynccontextmanager(target)
        elif inspect.isgeneratorfunction(target):
            self.kind, self.is_async = "generator", False
            self.call = contextlib.contextmanager(target)
        else:
            self.kind, self.is_async = "call", inspect.iscoroutinefunction(target)
            self.call = func
        self.direct = False

    def add(self, param: tuple[str, int, Any]) -> None:
        """Add the next parameter's resolution."""
        self.params.append(param)
        if param[1] == _DEPENDENCY:
            self.dependencies.append((param[0], param[2]))
        else:
            self.simple.append(param)


def inject(func: Callable[..., Any]) -> Callable[[Request], Awaitable[Response]]:
    """Turn a typed function into a Starlette endpoint with FastAPI-style parameters.

    Per request, each parameter of `func` is resolved by its declaration: `BackgroundTasks` (or a
    subclass) gets the request's one task collector; `Request`/`HTTPConnection` the request;
    `Depends(fn)` (as default or in `Annotated`) the result of `fn`, resolved the same way;
    anything else a path parameter of that name, else a query parameter, converted to `str`,
    `int`, `float` or `bool` (optionally `| None`). A missing or unconvertible value answers 422.

    The return value is sent as is if it is a `Response`, else as a `JSONResponse`; the collected
    tasks run after it has been sent (after its own `background`, if it has one). If `func` or a
    dependency raises, no task runs and the exception goes to Starlette's exception handlers.

    Args:
        func: A `def` or `async def` function.

    Returns:
        An endpoint for `starlette.routing.Route`.

    Raises:
        TypeError: a parameter cannot be resolved (unsupported annotation, `*args`, ...).
    """
    if not callable(func) or inspect.isclass(func):
        raise TypeError(f"inject() takes a function, got {func!r}.")
    plan = _analyse(func, ())
    collector_class = _collector_class(plan, func)

    async def endpoint(request: Request) -> Response:
        run = _Run(request, collector_class)
        try:
            # `run.call(plan)`, inlined for the endpoint because it is on every request's path.
            kwargs = await run.arguments(plan) if plan.dependencies else run.values(plan, {})
            if kwargs is _INVALID:
                result = _INVALID
            elif plan.direct:
                result = await func(**kwargs)
            else:
                result = await run.invoke(plan, kwargs)
            if result is _INVALID:
                response: Response = JSONResponse({"detail": run.errors}, status_code=422)
                run.abandon("the request failed validation (422)", logging.INFO)
            elif isinstance(result, Response):
                response = result
            else:
                try:
                    response = JSONResponse(result)
                except (TypeError, ValueError) as exc:
                    raise _not_json(func, result, exc) from exc
        except BaseException as exc:
            run.abandon(f"the endpoint raised {type(exc).__name__}", level_for(exc))
            if run.stack is not None:
                await run.stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        tasks = run.tasks
        if tasks is not None and not tasks.has_pending():
            tasks = None  # nothing to run
        if tasks is None and run.stack is None:
            return response
        if tasks is not None and response.background is not None:
            # Both run, its own first, each task isolated from the others' errors. The returned
            # response is never mutated (it may be cached and shared): a copy is sent instead.
            response = attach(copy.copy(response), tasks)
            tasks = cast(BackgroundTasks, response.background)
        return cast(Response, _Completion(response, tasks, run.stack))

    functools.update_wrapper(endpoint, func)
    return endpoint


class _Completion:
    """Sends the endpoint's response, then runs the request's tasks, then closes dependencies."""

    __slots__ = ("response", "stack", "tasks")

    def __init__(
        self, response: Response, tasks: BackgroundTasks | None, stack: AsyncExitStack | None
    ) -> None:
        self.response = response
        self.tasks = tasks
        self.stack = stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.response(scope, receive, send)
            if self.tasks is not None:
                # Runs only what the response's own background did not (each task runs once).
                await run_tasks(self.tasks)
        except BaseException as exc:
            if self.tasks is not None:
                log_not_run(self.tasks, f"sending the response raised {type(exc).__name__}")
            if self.stack is not None:
                await self.stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        if self.stack is not None:
            await self.stack.aclose()


class _Run:
    """The state of one request: its collector, dependency cache, exit stack and 422 errors."""

    # Most requests need none of these: class-level defaults save setting them on each one.
    tasks: BackgroundTasks | None = None
    cache: dict[Callable[..., Any], Any] | None = None
    stack: AsyncExitStack | None = None

    def __init__(self, request: Request, collector_class: type[BackgroundTasks]) -> None:
        self.request = request
        self.path_params: dict[str, Any] = request.scope.get("path_params", _NO_PARAMS)
        self.collector_class = collector_class
        self.errors: list[dict[str, Any]] = []

    async def call(self, plan: _Plan) -> Any:
        """Resolve `plan`'s parameters and call it; return `_INVALID` if a value was invalid."""
        kwargs = await self.arguments(plan) if plan.dependencies else self.values(plan, {})
        if kwargs is _INVALID:
            return _INVALID  # like FastAPI: nothing is called with invalid input
        if plan.direct:
            return await plan.call(**kwargs)
        return await self.invoke(plan, kwargs)

    async def arguments(self, plan: _Plan) -> Any:
        """Resolve the dependencies first (as FastAPI does), then the other parameters."""
        kwargs: dict[str, Any] = {}
        invalid = False
        for name, (dependency, use_cache) in plan.dependencies:
            if not use_cache:
                value = await self.call(dependency)
            else:
                if self.cache is None:
                    self.cache = {}
                value = self.cache.get(dependency.func, _NOT_CACHED)
                if value is _NOT_CACHED:
                    value = self.cache[dependency.func] = await self.call(dependency)
            kwargs[name] = value
            invalid = invalid or value is _INVALID
        values = self.values(plan, kwargs)
        return _INVALID if invalid else values

    def values(self, plan: _Plan, kwargs: dict[str, Any]) -> Any:
        """Add the parameters that need no awaiting to `kwargs`; `_INVALID` if one is invalid."""
        invalid = False
        for name, source, payload in plan.simple:
            if source == _VALUE:
                value = kwargs[name] = self._value(payload)
                invalid = invalid or value is _INVALID
            elif source == _TASKS:
                if self.tasks is None:
                    self.tasks = self.collector_class()
                kwargs[name] = self.tasks
            else:
                kwargs[name] = self.request
        return _INVALID if invalid else kwargs

    async def invoke(self, plan: _Plan, kwargs: dict[str, Any]) -> Any:
        """Call `plan` with resolved arguments, where it is not simply awaited."""
        args = (
            [kwargs.pop(name) for name, _, _ in plan.params[: plan.positional]]
            if plan.positional
            else ()
        )
        if plan.kind == "call":
            if plan.is_async:
                return await plan.call(*args, **kwargs)
            return await to_thread.run_sync(
                functools.partial(plan.call, *args, **kwargs),
                limiter=request_hop_limiter(),
            )
        if self.stack is None:
            self.stack = AsyncExitStack()
        manager = plan.call(*args, **kwargs)
        if plan.is_async:
            return await self.stack.enter_async_context(manager)
        value = await to_thread.run_sync(manager.__enter__, limiter=request_hop_limiter())
        self.stack.push_async_exit(functools.partial(to_thread.run_sync, manager.__exit__))
        return value

    def _value(self, param: ValueParam) -> Any:
        raw = self.path_params.get(param.name)  # never None for a parameter that is there
        if raw is not None:
            if param.is_str and type(raw) is str:
                return raw  # the most common parameter: nothing to convert
            location = "path"
        else:
            location, raw = "query", self.request.query_params.get(param.name)
            if raw is None:
                if not param.required:
                    return param.default
                loc = [location, param.name]
                self.errors.append(
                    {"type": "missing", "loc": loc, "msg": "Field required", "input": None}
                )
                return _INVALID
        try:
            return param.convert(raw)
        except (TypeError, ValueError):
            self.errors.append(
                {
                    "type": param.error_type,
                    "loc": [location, param.name],
                    "msg": param.message,
                    "input": raw,
                }
            )
            return _INVALID

    def abandon(self, reason: str, level: int) -> None:
        """Log, by name, the tasks that will not run because the request did not succeed."""
        if self.tasks is not None:
            log_not_run(self.tasks, reason, level)


def _not_json(func: Callable[..., Any], result: Any, exc: Exception) -> TypeError:
    return TypeError(
        f"{func.__qualname__} returned {type(result).__name__} {result!r:.80}, which cannot be "
        f"sent as JSON ({exc}). Return a dict, list, str, number, bool or None, or a starlette "
        f"Response."
    )


def _analyse(func: Callable[..., Any], seen: tuple[Callable[..., Any], ...]) -> _Plan:
    if func in seen:
        chain = " -> ".join(getattr(f, "__qualname__", repr(f)) for f in (*seen, func))
        raise TypeError(f"inject(): circular dependency: {chain}.")
    plan = _Plan(func)
    owner = getattr(func, "__qualname__", repr(func))
    signature = _signature(func, owner)
    for parameter in signature.parameters.values():
        where = f"parameter {parameter.name!r} of {owner}"
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(
                f"inject() cannot resolve {where}: *args and **kwargs have no request value. "
                f"Declare each parameter by name."
            )
        if parameter.kind is parameter.POSITIONAL_ONLY:
            plan.positional += 1
        plan.add(_analyse_parameter(parameter, where, (*seen, func)))
    # The common case, awaited in place without a helper coroutine: an async function called
    # with keyword arguments only.
    plan.direct = plan.kind == "call" and plan.is_async and not plan.positional
    return plan


def _signature(func: Callable[..., Any], owner: str) -> inspect.Signature:
    try:
        return inspect.signature(func, eval_str=True)
    except NameError:
        pass
    # Some annotation names a local (or a not-yet-defined) object. Evaluate them one by one: one
    # whose parameter has a `Depends(...)` default is not needed, so it need not resolve.
    signature = inspect.signature(func)
    namespace = getattr(inspect.unwrap(func), "__globals__", {})
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


def _analyse_parameter(
    parameter: inspect.Parameter, where: str, seen: tuple[Callable[..., Any], ...]
) -> tuple[str, int, Any]:
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
        return parameter.name, _DEPENDENCY, (_analyse(target, seen), dependency.use_cache)
    if inspect.isclass(annotation):
        if issubclass(annotation, _StarletteTasks):
            return parameter.name, _TASKS, annotation
        if issubclass(annotation, WebSocket):
            raise TypeError(f"inject() cannot resolve {where}: inject is for HTTP endpoints.")
        if issubclass(annotation, HTTPConnection):
            return parameter.name, _REQUEST, annotation
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
    return parameter.name, _VALUE, value


def _collector_class(plan: _Plan, func: Callable[..., Any]) -> type[BackgroundTasks]:
    """Pick one class for the request's collector that satisfies every `BackgroundTasks` hint."""
    wanted: list[type[Any]] = []
    stack = [plan]
    while stack:
        for _, source, payload in stack.pop().params:
            if source == _TASKS:
                wanted.append(payload)
            elif source == _DEPENDENCY:
                stack.append(payload[0])
    candidates = [cls for cls in wanted if issubclass(cls, BackgroundTasks)] or [BackgroundTasks]
    for candidate in candidates:
        if all(issubclass(candidate, cls) for cls in wanted):
            return candidate
    names = ", ".join(sorted({cls.__qualname__ for cls in wanted}))
    raise TypeError(
        f"inject(): {func.__qualname__} and its dependencies ask for background-task collectors "
        f"of classes that no single afterward collector can be ({names}). One request has one "
        f"collector: annotate with afterward.BackgroundTasks or one subclass of it."
    )
