"""`inject`: typed parameters, `Depends` and `BackgroundTasks` for plain Starlette endpoints.

`inject` analyses the function once (`_plan.py`); per request, `_Run` walks that plan: it resolves
each parameter, calls the dependencies and the function, and answers 422 for invalid values.
What remains after the response (tasks, dependency teardown) is done by the response it returns
(`_completion.py`).
"""

from __future__ import annotations

import functools
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from contextvars import Token
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response

from ._completion import complete, exit_sync_in_thread, json_response, tear_down
from ._current import MIDDLEWARE_SLOT, NO_COLLECTOR, Slot, collector_after_release, request_slot
from ._limiter import request_hop_limiter
from ._params import ValueParam
from ._plan import Kind, Plan, analyse, callable_name, collector_class, refuse_methods
from ._report import level_for, log_not_run, log_not_run_but_always
from ._tasks import BackgroundTasks, new_collector, seal

__all__ = ["inject"]

_NO_PARAMS: dict[str, Any] = {}
_NOT_CACHED = object()


class _Invalid:
    """Stands for a value, or a call's result, when a request value failed validation."""

    def __repr__(self) -> str:
        return "<invalid>"


_INVALID: Any = _Invalid()


def inject(func: Callable[..., Any]) -> Callable[[Request], Awaitable[Response]]:
    """Turn a typed function into a Starlette endpoint with FastAPI-style parameters.

    Per request, each parameter of `func` is resolved by its declaration: `BackgroundTasks` (or a
    subclass) gets the request's one task collector; `Request`/`HTTPConnection` the request;
    `Depends(fn)` (as default or in `Annotated`) the result of `fn`, resolved the same way;
    anything else a path parameter of that name, else a query parameter, converted to `str`,
    `int`, `float` or `bool` (optionally `| None`) as FastAPI converts it. A missing or
    unconvertible value answers FastAPI's 422. Request bodies, headers and cookies are not read.

    The return value is sent as is if it is a `Response`, else as a `JSONResponse`; the collected
    tasks run after it has been sent completely (after its own `background`, if it has one). If
    `func` or a dependency raises, no task runs and the exception goes to Starlette's exception
    handlers.

    Args:
        func: A `def` or `async def` function, a `functools.partial` of one, or a callable object.

    Returns:
        An endpoint for `starlette.routing.Route`.

    Raises:
        TypeError: a parameter cannot be resolved (unsupported annotation, `*args`, ...), or
            `func` is a method (`HTTPEndpoint` methods are not supported).
    """
    if not callable(func) or inspect.isclass(func):
        raise TypeError(f"inject() takes a function, got {func!r}.")
    refuse_methods(func)
    plan = analyse(func)
    collector_class_ = collector_class(plan, func)

    async def endpoint(request: Request) -> Response:
        run = _Run(request, collector_class_)
        outer = request.scope.get(MIDDLEWARE_SLOT)
        if outer is not None:
            # BackgroundTasksMiddleware has the collector and runs it, and current_tasks()
            # finds the middleware's slot.
            run.outer = outer
            token: Token[Slot] | None = None
        else:
            # current_tasks() finds this request's collector (a context variable's `set` and
            # `reset`: ~0.7 µs, what reading the middleware's slot in the scope saves).
            token = request_slot.set(run)
        try:
            try:
                # Not inlined: awaiting `func(*args)` here instead saves one frame, measured at
                # 0.04-0.05 µs of a ~13 µs request (0.4%), which does not pay for a second copy.
                result = await run.call(plan)
                if result is _INVALID:
                    run.abandon("the request failed validation (422)", logging.INFO)
                    response: Response = json_response(
                        {"detail": run.errors}, run.tasks, run.stack, 422
                    )
                elif isinstance(result, Response):
                    response = result
                else:
                    try:
                        response = json_response(result, run.tasks, run.stack)
                    except (TypeError, ValueError, RecursionError) as exc:
                        raise _not_json(func, result, exc) from exc
            except BaseException as exc:
                run.abandon(f"the endpoint raised {type(exc).__name__}", level_for(exc))
                if run.stack is not None:
                    await tear_down(run.stack, exc)
                    run.abandon(f"the endpoint raised {type(exc).__name__}", level_for(exc))
                if run.tasks is not None:
                    if run.tasks.has_pending():
                        await _run_always(run.tasks, exc)
                    seal(run.tasks)  # its run is over: a late add_task is refused
                raise
            if response is result:  # the endpoint's own: a copy completes the request, if need be
                tasks = run.tasks
                if run.stack is not None or (tasks is not None and tasks.has_pending()):
                    return complete(response, tasks, run.stack)
                if tasks is not None:
                    seal(tasks)  # nothing left to run, and nothing will run it
            return response
        finally:
            if token is not None:
                request_slot.reset(token)
                # The endpoint has returned: `run`, the request's slot, is held by every task's
                # captured context, and the collector, the exit stack and the dependency cache can
                # each lead back to those tasks; keep none of them (their owner now is the
                # response that completes the request), the collector only weakly, for
                # `current_tasks()` in its tasks. See `RequestSlot.release`. Written here, not
                # as a method: one call less per request (~600 instructions of ~136,000).
                tasks = run.tasks
                run.after = NO_COLLECTOR if tasks is None else weakref.ref(tasks)
                run.tasks = run.stack = run.cache = None

    functools.update_wrapper(endpoint, func)
    endpoint.__name__ = callable_name(func).rpartition(".")[2]
    return endpoint


class _Run:
    """The state of one request: its collector, dependency cache, exit stack and 422 errors."""

    # Slots: a request writes a few of these after `__init__` (the collector, its release), and
    # each write of a name new to an instance's `__dict__` grows it (measured: 0.4 µs for the
    # three `release` wrote, 1 % of a request); a slot's write costs no allocation.
    __slots__ = (
        "after",
        "cache",
        "collector_class",
        "errors",
        "handed",
        "outer",
        "path_params",
        "request",
        "stack",
        "tasks",
    )

    def __init__(self, request: Request, collector_class: type[BackgroundTasks]) -> None:
        self.request = request
        self.path_params: dict[str, Any] = request.scope.get("path_params", _NO_PARAMS)
        self.collector_class = collector_class
        self.errors: list[dict[str, Any]] = []
        self.tasks: BackgroundTasks | None = None  # the collector inject runs after the response
        self.outer: Slot | None = None  # the middleware's slot, when it runs the tasks instead
        self.handed: BackgroundTasks | None = None  # the collector parameters got from `outer`
        # Once released (at the end of `inject`'s endpoint): what is left of the collector.
        self.after: Callable[[], BackgroundTasks | None] | None = None
        self.cache: dict[Callable[..., Any], Any] | None = None
        self.stack: AsyncExitStack | None = None

    def open(self) -> BackgroundTasks:
        """Return the request's collector (`current_tasks()` and parameters), made on first use."""
        if self.tasks is not None:
            return self.tasks
        if self.after is not None:
            return collector_after_release(self.after)
        if self.outer is None:
            if self.collector_class is BackgroundTasks:
                self.tasks = new_collector()
            else:
                self.tasks = self.collector_class()
            return self.tasks
        if self.handed is None:
            handed = self.outer.open()
            if not isinstance(handed, self.collector_class):
                raise TypeError(
                    f"This endpoint asks for a collector of class "
                    f"{self.collector_class.__qualname__}, but the request's collector, made by "
                    f"BackgroundTasksMiddleware, is a {type(handed).__qualname__}. Give the "
                    f"middleware that class: BackgroundTasksMiddleware(app, "
                    f"collector={self.collector_class.__qualname__})."
                )
            self.handed = handed
        return self.handed

    async def call(self, plan: Plan) -> Any:
        """Resolve `plan`'s parameters and call it; return `_INVALID` if a value was invalid."""
        args: list[Any] = [None] * plan.size  # in the signature's order
        args = await self.arguments(plan, args) if plan.dependencies else self.values(plan, args)
        if args is _INVALID:
            return _INVALID  # like FastAPI: nothing is called with invalid input
        if plan.direct:
            return await plan.call(*args)
        return await self.invoke(plan, args)

    async def arguments(self, plan: Plan, args: list[Any]) -> Any:
        """Resolve the dependencies first (as FastAPI does), then the other parameters."""
        invalid = False
        for index, dependency, use_cache in plan.dependencies:
            if not use_cache:
                value = await self.call(dependency)
            else:
                if self.cache is None:
                    self.cache = {}
                value = self.cache.get(dependency.func, _NOT_CACHED)
                if value is _NOT_CACHED:
                    value = self.cache[dependency.func] = await self.call(dependency)
            args[index] = value
            invalid = invalid or value is _INVALID
        values = self.values(plan, args)
        return _INVALID if invalid else values

    def values(self, plan: Plan, args: list[Any]) -> Any:
        """Put the parameters that need no awaiting in `args`; return it, `_INVALID` if invalid."""
        if plan.collector_slots:
            tasks = self.open()
            for index in plan.collector_slots:
                args[index] = tasks
        for index in plan.request_slots:
            args[index] = self.request
        if not plan.values:
            return args
        errors = len(self.errors)
        for index, param in plan.values:
            args[index] = self._value(param)
        if len(self.errors) == errors:
            return args
        # FastAPI lists a function's path parameters' errors before its query parameters'.
        self.errors[errors:] = sorted(self.errors[errors:], key=lambda e: e["loc"][0] != "path")
        return _INVALID

    async def invoke(self, plan: Plan, args: list[Any]) -> Any:
        """Call `plan` with resolved arguments, where it is not simply awaited."""
        kwargs: dict[str, Any] = {}
        if plan.keyword_only:
            first = plan.size - len(plan.keyword_only)
            kwargs = dict(zip(plan.keyword_only, args[first:], strict=True))
            del args[first:]
        kind = plan.kind
        if kind is Kind.ASYNC:
            return await plan.call(*args, **kwargs)
        if kind is Kind.SYNC:
            return await to_thread.run_sync(
                functools.partial(plan.call, *args, **kwargs), limiter=request_hop_limiter()
            )
        if self.stack is None:
            self.stack = AsyncExitStack()
        if kind is Kind.ASYNC_GENERATOR:
            return await self.stack.enter_async_context(plan.call(*args, **kwargs))
        manager = plan.call(*args, **kwargs)
        value = await to_thread.run_sync(manager.__enter__, limiter=request_hop_limiter())
        exit_sync_in_thread(self.stack, manager)
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
                self.errors.append(
                    {
                        "type": "missing",
                        "loc": [location, param.name],
                        "msg": "Field required",
                        "input": None,
                    }
                )
                return _INVALID
        try:
            return param.convert(raw)
        except (TypeError, ValueError) as exc:
            self.errors.append(param.error(location, raw, exc))
            return _INVALID

    def abandon(self, reason: str, level: int) -> None:
        """Log, by name, the tasks that will not run because the request did not succeed.

        Those made with `afterward.task(..., always=True)` stay, to run all the same.
        """
        if self.tasks is not None:
            log_not_run_but_always(self.tasks, reason, level)


async def _run_always(tasks: BackgroundTasks, exc: BaseException) -> None:
    """The endpoint raised: run the `always=True` tasks now, before the error goes on."""
    if isinstance(exc, Exception):
        await tasks()
    else:  # a cancellation: nothing may be awaited any more
        log_not_run(tasks, f"the endpoint was stopped by {type(exc).__name__}", level_for(exc))


def _not_json(func: Callable[..., Any], result: object, exc: Exception) -> TypeError:
    return TypeError(
        f"{callable_name(func)} returned {type(result).__name__} {result!r:.80}, which cannot be "
        f"sent as JSON ({exc}). Return a dict, list, str, number, bool or None, or a starlette "
        f"Response."
    )
