"""A task's transitions (started, succeeded, failed, cancelled, abandoned), with their events.

Each writes the handle's status and timings (`_handle`), counts the outcome and, when someone
listens, emits the event (`_events`); in the thread where the transition happens.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

from ._events import count, emit, listeners
from ._handle import DONE, TaskHandle, finish

if TYPE_CHECKING:
    from ._call import Call

__all__ = ["abandon", "cancel", "fail", "start", "succeed"]


def start(task: Call, attempt: int, now: float) -> None:
    """Attempt number `attempt` of `task` starts."""
    task._status = "running"
    task._attempts = attempt
    if attempt == 1:
        task.started_at = now


def succeed(task: Call, attempt: int, started: float) -> None:
    """`task`'s attempt that started at `started` returned: the task has succeeded."""
    now = time.time()
    finish(task, "succeeded", now)
    count("succeeded")
    if listeners:
        emit("succeeded", task, attempt, now - started)


def fail(task: Call, exc: BaseException, attempt: int, started: float) -> None:
    """`task`'s last attempt raised `exc`: the task has failed."""
    now = time.time()
    task.exception = exc
    task._duration = now - started
    finish(task, "failed", now)
    count("failed")
    if listeners:
        emit("failed", task, attempt, now - started, exc)


def cancel(task: Call, exc: BaseException, attempt: int, started: float | None) -> None:
    """`task`'s attempt was stopped by `exc` (a cancellation) while it ran."""
    if task.status in DONE:
        return
    now = time.time()
    duration = None if started is None else now - started
    finish(task, "cancelled", now)
    count("cancelled")
    if listeners:
        emit("cancelled", task, attempt, duration, exc)


def abandon(tasks: Iterable[object]) -> None:
    """The entries of `tasks` will never run (those that are afterward tasks get the status)."""
    now = 0.0
    abandoned = 0
    for task in tasks:
        if isinstance(task, TaskHandle) and task.status not in DONE:
            now = now or time.time()
            finish(task, "abandoned", now)
            abandoned += 1
            if listeners:
                emit("abandoned", cast("Call", task), task.attempts)
    if abandoned:
        count("abandoned", abandoned)
