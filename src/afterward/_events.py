"""Task events, attempt scopes and outcome counters: the hooks observability builds on.

- `on_event(callback)`: the callback gets a `TaskEvent` at each transition of every task
  (queued, started, succeeded, failed, retrying, cancelled, abandoned), in the thread that
  records it (see `on_event`). A callback that raises is logged, never breaks a task.
- `add_attempt_scope(factory)`: `factory(task, attempt)` returns a context manager entered around
  each attempt, inside the attempt's context (in the worker thread for a sync task), and exited
  with the attempt's exception, if any. OpenTelemetry's span per attempt is one.
- `counts()`: how many tasks ended each way since the process started, for `afterward.stats()`.

With no callback and no scope registered the runner skips all of this: it tests `hooked()` once
per run and keeps its fast paths.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ._call import Call

__all__ = [
    "AttemptScope",
    "EventKind",
    "TaskEvent",
    "add_attempt_scope",
    "count",
    "counts",
    "emit",
    "hooked",
    "listeners",
    "on_event",
    "scopes",
    "succeeded_counter",
]

logger = logging.getLogger("afterward")

EventKind = Literal[
    "queued", "started", "succeeded", "failed", "retrying", "cancelled", "abandoned"
]
"""What happened to a task: see `TaskEvent.kind`."""

AttemptScope = Callable[["Call", int], AbstractContextManager[Any]]
"""`factory(task, attempt)`: a context manager entered around one attempt of `task`."""

OUTCOMES = ("succeeded", "failed", "retried", "cancelled", "abandoned")
"""The outcomes `counts()` reports; `retried` counts failed attempts that were retried."""


@dataclass(frozen=True)
class TaskEvent:
    """One transition of one task, as given to the callbacks of `afterward.on_event`.

    Attributes:
        kind: `"queued"` (added), `"started"` (an attempt starts), `"succeeded"`, `"failed"`
            (the last attempt failed), `"retrying"` (an attempt failed, another follows),
            `"cancelled"` (stopped while it ran: shutdown, a cancelled request) or
            `"abandoned"` (it will never run: an error response, `stop_on_error`, a drain).
        name: The task's name.
        id: The task's id (`task.id`).
        attempt: The attempt the event is about (1 for the first); 0 for a task that never
            started.
        duration: Seconds the attempt took, for the events that end one (succeeded, failed,
            retrying, cancelled); else None.
        exception: The exception of a failed, retried or cancelled attempt; else None.
        task: The task itself, its handle (`afterward.BackgroundTask`).
    """

    kind: EventKind
    name: str
    id: str
    attempt: int
    duration: float | None
    exception: BaseException | None
    task: Call


listeners: list[Callable[[TaskEvent], object]] = []
"""The registered event callbacks (read by the runner: empty means no event is built)."""
scopes: list[AttemptScope] = []
"""The registered attempt scopes."""

# One `itertools.count` per outcome: `next()` on it is a single C call, so it counts correctly
# from any thread without a lock (what a task's end costs is on the hot path); `repr` reads it.
_counters = {outcome: itertools.count() for outcome in OUTCOMES}
succeeded_counter = _counters["succeeded"]
"""The runner's fast paths count a success with `next(succeeded_counter)`."""


def on_event(callback: Callable[[TaskEvent], object]) -> Callable[[], None]:
    """Call `callback(event)` at every transition of every task; return a function that stops it.

    The callback runs in the thread that records the transition: `queued` in the one that
    called `add_task`; the others, while a callback is registered, on the event loop (a sync
    task's attempts still run in worker threads), except for tasks whose run had already started
    when the callback was registered (a worker thread's, for sync ones). Keep it quick, and
    thread-safe. If it raises, the exception is logged and the task goes on.

    Raises:
        TypeError: `callback` is not callable.
    """
    if not callable(callback):
        raise TypeError(f"on_event() needs a callable taking one TaskEvent, got {callback!r}.")
    listeners.append(callback)
    return lambda: _remove(listeners, callback)


def add_attempt_scope(factory: AttemptScope) -> Callable[[], None]:
    """Enter `factory(task, attempt)` around every attempt of every task; return a remover.

    The context manager is entered inside the attempt's context (the `contextvars` captured at
    `add_task`), in the thread that runs the attempt, and exited with the attempt's exception if
    it raised. Its `__exit__` must not suppress the exception (its return value is ignored).

    Raises:
        TypeError: `factory` is not callable.
    """
    if not callable(factory):
        raise TypeError(
            f"add_attempt_scope() needs a callable (task, attempt) -> context manager, got "
            f"{factory!r}."
        )
    scopes.append(factory)
    return lambda: _remove(scopes, factory)


def hooked() -> bool:
    """Return whether a callback or an attempt scope is registered."""
    return bool(listeners or scopes)


def emit(
    kind: EventKind,
    task: Call,
    attempt: int,
    duration: float | None = None,
    exception: BaseException | None = None,
) -> None:
    """Call the registered callbacks with one event (callers test `listeners` first)."""
    event = TaskEvent(kind, task.name, task.id, attempt, duration, exception, task)
    for callback in tuple(listeners):
        try:
            callback(event)
        except Exception:
            logger.exception(
                "An afterward event callback (%r) failed on the %s event of %s.",
                callback,
                kind,
                task.name,
            )


def count(outcome: str, number: int = 1) -> None:
    """Add `number` tasks (or retried attempts) to `outcome`'s counter, from any thread."""
    counter = _counters[outcome]
    for _ in range(number):
        next(counter)


def counts() -> dict[str, int]:
    """Return how many tasks ended each way since the process started, and attempts retried.

    Keys: `succeeded`, `failed`, `retried`, `cancelled`, `abandoned`.
    """
    # `repr(itertools.count(5))` is "count(5)": the number of `next()` calls so far.
    return {outcome: int(repr(counter)[6:-1]) for outcome, counter in _counters.items()}


def _remove(registry: list[Any], item: object) -> None:
    # Removing twice is harmless. `emit` iterates a snapshot, so removal during an event is safe.
    for index, registered in enumerate(registry):
        if registered is item:
            del registry[index]
            return
