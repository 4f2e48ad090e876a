"""The handle side of a task: its status, timings and outcome, and `await task.wait()`.

`add_task` returns the entry itself, which is the handle. A handle nobody looks at must cost
nothing measurable, so everything about it is a class-level default until it changes: the runner's
fast paths write only the two timestamps a run has (the status follows from them, see
`TaskHandle.status`), the id is made on first read, and `wait()` makes its event only when someone
waits.
"""

from __future__ import annotations

import itertools
import os
import threading
import uuid
from typing import TYPE_CHECKING, Literal

import anyio

from ._loopcall import LoopCaller

if TYPE_CHECKING:
    from ._policy import TaskPolicy

__all__ = [
    "DONE",
    "Status",
    "TaskHandle",
    "finish",
]

Status = Literal["pending", "running", "succeeded", "failed", "cancelled", "abandoned"]
"""Where a task is: see `TaskHandle.status`."""

DONE = frozenset({"succeeded", "failed", "cancelled", "abandoned"})
"""The statuses of a task that has ended."""


def _new_prefix() -> None:
    global _prefix, _ids
    _prefix = uuid.uuid4().hex[:20]
    _ids = itertools.count(1)


# Ids are a random prefix per process and a counter: unique across processes and hosts, and
# about ten times cheaper to make than a `uuid4()` each. A forked child gets a prefix of its own.
_prefix = ""
_ids = itertools.count(1)
_new_prefix()
if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_new_prefix)


class _Waiter:
    """The event `wait()` waits on, and the way to set it on its loop from any thread."""

    __slots__ = ("event", "loop", "thread")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.loop = LoopCaller.current()
        self.thread = threading.get_ident()

    def wake(self) -> None:
        if threading.get_ident() == self.thread:
            self.event.set()
        else:
            self.loop.call_soon(self.event.set)


class TaskHandle:
    """What can be known about one task: status, attempts, timings, exception.

    Attributes:
        status: `"pending"` (queued), `"running"`, `"succeeded"`, `"failed"` (its last attempt
            raised), `"cancelled"` (stopped while it ran: shutdown, a cancelled request) or
            `"abandoned"` (it will never run: the request failed, `stop_on_error`, a drain).
        exception: The exception of the last failed attempt, or None.
        attempts: How many attempts have started (0 before the first).
        queued_at: When the task was added (`time.time()`).
        started_at: When its first attempt started, or None.
        finished_at: When it ended, or None.
        policy: The `TaskPolicy` it runs with (from `afterward.task`), or None.
    """

    exception: BaseException | None = None
    queued_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    policy: TaskPolicy | None = None
    _attempts = 0  # written by attempt-by-attempt runs only; a fast path's is 1 once started
    _id: str | None = None
    _waiter: _Waiter | None = None
    _duration: float | None = None  # of the last failed attempt, for the log line
    # Written by every transition but a fast path's start and success, which write only
    # `started_at` and `finished_at` (two status writes less per task: ~480 instructions of a
    # request's ~136,000, callgrind); `status` reads it, else derives it from those two.
    _status: Status | None = None

    @property
    def status(self) -> Status:
        """`"pending"`, `"running"`, `"succeeded"`, `"failed"`, `"cancelled"` or `"abandoned"`."""
        status = self._status
        if status is not None:
            return status
        if self.finished_at is not None:
            return "succeeded"  # only a fast path ends a task without writing its status
        return "pending" if self.started_at is None else "running"

    @property
    def attempts(self) -> int:
        """How many attempts have started (0 before the first)."""
        return self._attempts or (0 if self.started_at is None else 1)

    @property
    def id(self) -> str:
        """A unique id (hex digits), made when first read."""
        task_id = self._id
        if task_id is None:
            task_id = self._id = f"{_prefix}{next(_ids):012x}"
        return task_id

    @property
    def done(self) -> bool:
        """Whether the task has ended, whichever way."""
        return self.status in DONE

    async def wait(self) -> None:
        """Return once the task has ended, whichever way (see `status`).

        Call it on the event loop the task runs on (or any, for a task run inline). A task that
        is never run (its collector is never run) never ends: put a timeout around the wait
        (`anyio.fail_after`) where that can happen.
        """
        if self.status in DONE:
            return
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = _Waiter()
        # Set before the check: the thread ending the task writes the status, then reads
        # `_waiter`; one of the two sides sees the other.
        if self.status in DONE:
            return
        await waiter.event.wait()


def finish(task: TaskHandle, status: Status, finished_at: float) -> None:
    """Record how `task` ended, and wake its waiters; from any thread."""
    task._status = status
    task.finished_at = finished_at
    waiter = task._waiter
    if waiter is not None:
        waiter.wake()
