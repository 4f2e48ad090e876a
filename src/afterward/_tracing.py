"""Per-task spans: afterward's tasks run through the tracing hooks on the frameworks' tasks.

Tracing tools give each background task a span by hooking the frameworks' own task running:
`opentelemetry-instrumentation-fastapi` (and logfire, which uses it) replaces
`starlette.background.BackgroundTask.__call__` with a wrapper that opens a span around the
original; FastAPI's native telemetry (`FastAPI(telemetry=...)`) opens one per task in
`fastapi.BackgroundTasks.__call__`. afterward runs its entries itself, so those hooks would see
at most the whole collector. (The FastAPI drop-in's entry for its whole collector, in FastAPI's
collector, is kept out of both hooks: `afterward.fastapi._dependency._attach`.)

When, and only when, a run finds such a hook in place, each afterward entry is run through it:
the hook is called with a plain Starlette `BackgroundTask` whose `func` is a stand-in that looks
like the entry's function (name, qualname, module, class) and, when called, runs the entry the
afterward way (own thread limiter, captured `contextvars` context). The context the hook set up
around the call (the span it made current, whatever else it set) is laid over the entry's
captured context, so inside the task the hook's span is current, as it is for a Starlette task.
The entry's exception goes out through the hook (which marks its span) and is then reported by
the runner like any failure.

Nothing here imports a tracing package: the hooks are recognised by what they replaced, and
FastAPI's module is only looked up if it has already been imported. With no hook in place, a run
pays one attribute lookup and one dictionary lookup, and, once FastAPI is imported, one read of
OpenTelemetry's context variable: FastAPI's telemetry keeps a request's data in OpenTelemetry's
context, so while that context is empty no request is observed, and FastAPI's own (slower)
question is not asked. That question cost 4,400 instructions per request in the benchmark's "1
async task" (3 % of the request), in every process that had imported FastAPI.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from contextvars import Context, ContextVar, copy_context
from typing import Any, NamedTuple

from starlette.background import BackgroundTask as StarletteTask
from starlette.background import BackgroundTasks as StarletteTasks

__all__ = ["TraceHook", "active_hook", "run_through_hook"]

Execute = Callable[[Any, Context], Awaitable[None]]
"""The runner's way to run one afterward entry in a given context, raising what it raises."""


def _is_pristine(call: object) -> bool:
    # A wrapper that copies the original's module and name (functools.wraps) still says so
    # with `__wrapped__`.
    return getattr(call, "__module__", None) == "starlette.background" and not hasattr(
        call, "__wrapped__"
    )


_STARLETTE_CALL: object = StarletteTask.__dict__["__call__"]
if not _is_pristine(_STARLETTE_CALL):  # pragma: no cover - patched before afterward was imported
    _STARLETTE_CALL = None
_STARLETTE_TASKS_CALL: object = StarletteTasks.__call__


class TraceHook(NamedTuple):
    """What a run goes through for each entry while a tracing hook is in place."""

    fastapi_tasks: type[StarletteTasks] | None
    """`fastapi.BackgroundTasks` when its per-task telemetry is on for this request, else None."""


def active_hook() -> TraceHook | None:
    """Return the tracing hook in place for a run starting now, or None (the common case)."""
    fastapi_tasks = None
    telemetry = sys.modules.get("fastapi.telemetry")
    if telemetry is not None:  # else FastAPI is not imported, or has no native telemetry
        otel_context = _otel_context
        if otel_context is _UNKNOWN:
            otel_context = _find_otel_context()
        # While OpenTelemetry's context is empty, no telemetry observes this request.
        if otel_context is None or otel_context.get(None):
            fastapi_tasks = _fastapi_tasks_tracing(telemetry)
    call = StarletteTask.__call__
    if fastapi_tasks is None and (call is _STARLETTE_CALL or _is_pristine(call)):
        return None
    return TraceHook(fastapi_tasks)


def _fastapi_tasks_tracing(telemetry: Any) -> type[StarletteTasks] | None:
    """Return `fastapi.BackgroundTasks` if FastAPI's `telemetry` observes the current request."""
    if telemetry.get_telemetry_data() is None:
        return None  # telemetry off, or this request excluded
    tasks: type[StarletteTasks] = sys.modules["fastapi"].BackgroundTasks
    # Only a FastAPI whose collector runs each task in an operation of its own gives spans.
    return None if tasks.__call__ is _STARLETTE_TASKS_CALL else tasks


_UNKNOWN: Any = object()
_otel_context: ContextVar[Any] | None = _UNKNOWN
"""OpenTelemetry's context variable, found when FastAPI's telemetry is first seen."""


def _find_otel_context() -> ContextVar[Any] | None:
    """Find, and remember, the context variable of OpenTelemetry's runtime context, else None.

    OpenTelemetry's default runtime context (`ContextVarsRuntimeContext`) keeps the current
    context in one `ContextVar`. Another runtime context (`OTEL_PYTHON_CONTEXT`), or a release
    that keeps it otherwise, gives None, and every run then asks FastAPI, as it always may.
    """
    global _otel_context
    runtime = getattr(sys.modules.get("opentelemetry.context"), "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    _otel_context = variable if isinstance(variable, ContextVar) else None
    return _otel_context


async def run_through_hook(hook: TraceHook, entry: Any, execute: Execute | None) -> None:
    """Run one collector entry through the tracing hook, as the framework would run its task.

    Args:
        hook: What `active_hook()` returned at the start of the run.
        entry: The collector entry.
        execute: Runs an afterward entry in the context it is given, raising its exception; None
            for an entry that is run as it runs itself (`await entry()`), as Starlette would.

    Raises:
        Exception: Whatever the entry raised, after the hook has seen it.
    """
    stand_in = None if execute is None else _StandIn(entry, execute, copy_context())
    task: Any = entry if stand_in is None else _proxy_task(stand_in)
    if hook.fastapi_tasks is not None and hasattr(task, "func"):
        await hook.fastapi_tasks([task])()
    else:
        await task()
    if stand_in is not None and not stand_in.called:
        raise RuntimeError(
            f"The tracing hook on Starlette's or FastAPI's task running returned without calling "
            f"the task, so {entry.name} did not run. Check the instrumentation that replaced "
            f"starlette.background.BackgroundTask.__call__ (now {StarletteTask.__call__!r})."
        )


def _proxy_task(stand_in: _StandIn) -> StarletteTask:
    """Return a plain Starlette task whose (async) function is `stand_in`, without `__init__`."""
    task = StarletteTask.__new__(StarletteTask)
    # What Starlette's `__init__` sets, without its inspection of the function.
    vars(task).update(func=stand_in, args=(), kwargs={}, is_async=True)
    return task


class _StandIn:
    """Looks like the entry's function to the hook; when awaited, runs the entry afterward's way.

    The hooks name a task from its function's `__name__` (else its class's name), or from
    `__module__` and `__qualname__` (else its class's): the stand-in answers each as the function
    would.
    """

    def __init__(self, entry: Any, execute: Execute, outside: Context) -> None:
        self._entry = entry
        self._execute = execute
        self._outside = outside
        self.called = False
        func = entry.func
        names = vars(self)
        if hasattr(func, "__name__"):
            names["__name__"] = func.__name__
        names["__qualname__"] = getattr(func, "__qualname__", type(func).__qualname__)
        names["__module__"] = getattr(func, "__module__", type(func).__module__)

    @property  # type: ignore[misc]  # the class a hook falls back on is that of the function
    def __class__(self) -> type:
        return type(self._entry.func)

    async def __call__(self) -> None:
        self.called = True
        await self._execute(self._entry, _overlay(self._entry.context, self._outside))


def _overlay(captured: Context, outside: Context) -> Context:
    """Return a copy of `captured` with what the hook set in the current context laid over it.

    `outside` is the context just before the hook was called: every variable whose value differs
    now was set by the hook (the span it made current, for OpenTelemetry).
    """
    context = captured.copy()
    missing = object()
    for variable, value in copy_context().items():
        if outside.get(variable, missing) is not value:
            context.run(variable.set, value)
    return context
