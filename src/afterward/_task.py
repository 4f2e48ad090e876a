"""The model of one task: `BackgroundTask`, one checked call with its captured context.

Its own module, below the collector (`_tasks`), so that what the collector builds on (the
`Backend` interface) can name it without importing the collector.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from contextvars import copy_context
from time import time as _now
from typing import Any

from starlette.background import BackgroundTask as _StarletteTask
from typing_extensions import ParamSpec

from ._call import Call
from ._callables import TaskShape, check_call
from ._runner import run_task

__all__ = ["BackgroundTask"]

P = ParamSpec("P")


class BackgroundTask(_StarletteTask, Call):
    """One call to run after the response: `func(*args, **kwargs)`.

    The call is checked when the task is created, in the request (so a mistake is a `TypeError`
    there, not a lost task later), and the current `contextvars` context is captured so the task
    sees the values that were set when it was added.

    It is a `starlette.background.BackgroundTask`, so it can be passed on its own as a response's
    `background=`; run that way, it gets afterward's semantics (isolated errors, own threads).

    It is also the task's handle, which `add_task` returns: `status`, `exception`, `attempts`,
    the timings and `await wait()` tell what became of it (see docs/policies.md).

    A subclass may override `__call__` (to time, trace or retry the task): in a collector the
    override is awaited, as Starlette does, inside the captured context, and `await
    super().__call__()` in it runs the function on the collector's limiter and raises what the
    function raises, for the override to see; the collector then logs a failure as usual.

    Attributes:
        func: The function to call.
        args: Positional arguments for `func`.
        kwargs: Keyword arguments for `func`.
        is_async: Whether `func` is awaited on the event loop (else it runs in a worker thread).
        name: `module.qualname` of `func` (or the name given to `afterward.task`), used in
            logs, events and metrics.
        context: The `contextvars.Context` the task runs in.
        id: A unique string, made when first read.
        status: `"pending"`, `"running"`, `"succeeded"`, `"failed"`, `"cancelled"` (stopped while
            it ran) or `"abandoned"` (never run: the request failed, `stop_on_error`, a drain).
        exception: The exception of the last failed attempt, or None.
        attempts: How many attempts have started.
        queued_at: `time.time()` when it was added.
        started_at: `time.time()` when its first attempt started, or None.
        finished_at: `time.time()` when it ended, or None.
        policy: Its `afterward.TaskPolicy` (from `afterward.task`), or None.
    """

    name: str
    context: contextvars.Context

    def __init__(self, func: Callable[P, Any], *args: P.args, **kwargs: P.kwargs) -> None:
        _fill(self, func, args, kwargs, check_call(func, args, kwargs), type(self).runs_directly)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__call__" in vars(cls):
            cls.runs_directly = False  # the runner awaits `task()`, honouring the override

    def __repr__(self) -> str:
        return f"<BackgroundTask {self.name}>"

    async def __call__(self) -> None:
        """Run the task (see the class docstring for a subclass's `super().__call__()`)."""
        await run_task(self)

    async def wait(self) -> None:
        """Return once the task has ended, whichever way (see `status`).

        Call it on the event loop; it works whichever thread ends the task. A task that is
        never run never ends: put a deadline around the wait (`anyio.fail_after`) where that
        can happen.
        """
        await super().wait()


def _fill(
    task: Call,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    shape: TaskShape,
    runs_directly: bool = True,
) -> None:
    # Every attribute the runner reads per task is written here, on the instance: an attribute
    # read that falls back to the class's default misses CPython 3.11's specialised lookup and
    # costs ~180 instructions (callgrind), three of them per task before.
    if shape.policy is None:
        task.func = func
        task._plain = runs_directly
    else:  # an `afterward.task`: run its function, with its policy
        task.func = shape.target
        task.policy = shape.policy
        task._plain = False
    task._waiter = None
    task.queued_at = _now()
    task.args = args
    task.kwargs = kwargs
    task.is_async = shape.is_async
    task.name = shape.name
    task.context = copy_context()
