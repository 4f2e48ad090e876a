"""`afterward.stats()`: how many tasks ended each way, and how many requests' tasks run or wait.

Two scopes, one shape (`Stats`):

- `afterward.stats()`: the whole process. Its outcome counts are those of `_events.counts()`,
  kept by the runner for every task, inline and detached alike; `running` and `waiting` add up
  the live supervisors (one per `BackgroundTasksMiddleware` whose app is running).
- `BackgroundTasksMiddleware.stats()`: one middleware's supervisor. Its outcome counts are those
  of the tasks handed to it, which it tallies from their handles when each request's run ends
  (`Outcomes.tally`, one loop over the request's entries), or when it refuses them: the runner
  has nothing to know of it. (One difference: a task cancelled in the wait between two attempts
  counts that retry in the process-wide `retried` only; its handle cannot tell the wait from the
  next attempt.)

`running` and `waiting` count requests (collectors), not tasks, as `max_running` and
`max_waiting` do: a request whose tasks have started is running until its last task has ended.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ._call import Call
from ._events import OUTCOMES, counts
from ._handle import DONE

__all__ = ["Outcomes", "Stats", "register", "stats", "supervisor_stats"]


@dataclass(frozen=True)
class Stats:
    """A snapshot of afterward's task figures, taken by `afterward.stats()`.

    The outcome counts are totals since the process started (for `afterward.stats()`) or since
    the app started (for `BackgroundTasksMiddleware.stats()`); `running` and `waiting` are the
    figures at the moment of the snapshot.

    Attributes:
        succeeded: Tasks whose last attempt returned.
        failed: Tasks whose last attempt raised (no retry left, or not a `retry_on` exception).
        retried: Failed attempts that were followed by another attempt (a task that succeeded
            at its third attempt adds 2 here, and 1 to `succeeded`).
        cancelled: Tasks stopped while they ran: the drain deadline at shutdown, a cancelled
            request.
        abandoned: Tasks that never ran and never will: an error response, `stop_on_error`, a
            full queue, the drain deadline.
        running: Requests whose tasks are running under a `BackgroundTasksMiddleware` (at most
            `max_running` of them on the event loop, plus those in worker threads).
        waiting: Requests whose tasks have been handed off and wait for a running slot or a
            worker thread (at most `max_waiting`).
    """

    succeeded: int
    failed: int
    retried: int
    cancelled: int
    abandoned: int
    running: int
    waiting: int


class Outcomes:
    """Outcome counters one supervisor keeps for the tasks it was handed.

    Guarded by the lock it is given, the supervisor's own: its hot path, the end of a request's
    run, counts under the lock it already holds there (`tally_locked`).
    """

    __slots__ = ("_counts", "_lock")

    def __init__(self, lock: threading.Lock) -> None:
        self._counts = dict.fromkeys(OUTCOMES, 0)
        self._lock = lock

    def tally(self, tasks: Iterable[object]) -> None:
        """Count the ended tasks among `tasks` (a collector's entries), by their status."""
        with self._lock:
            self.tally_locked(tasks)

    def tally_locked(self, tasks: Iterable[object]) -> None:
        """`tally`, for a caller that holds the lock.

        Entries that are not afterward's own tasks (a Starlette task in the collector) have no
        status and are not counted.
        """
        counts = self._counts
        for task in tasks:
            if isinstance(task, Call):
                status = task.status
                if status in DONE:
                    counts[status] += 1
                    # Every attempt but the last was followed by another: it was retried.
                    attempts = task.attempts
                    if attempts > 1:
                        counts["retried"] += attempts - 1

    def snapshot(self) -> dict[str, int]:
        """Return the counts so far."""
        with self._lock:
            return dict(self._counts)


class Supervisor(Protocol):
    """What stats need of a supervisor (`_supervisor.Supervisor`), named here so that this
    module, which the supervisor imports, does not import it back."""

    @property
    def outcomes(self) -> Outcomes: ...

    def counts(self) -> tuple[int, int]:
        """Return how many requests' tasks wait, and how many run."""
        ...


_supervisors: weakref.WeakSet[Supervisor] = weakref.WeakSet()
_supervisors_lock = threading.Lock()


def register(supervisor: Supervisor) -> None:
    """Count `supervisor`'s running and waiting requests in `afterward.stats()` while it lives."""
    with _supervisors_lock:
        _supervisors.add(supervisor)


def stats() -> Stats:
    """Return how many tasks ended each way since the process started, and what runs now.

    The outcome counts cover every task afterward ran, inline (in the request, without the
    middleware) and detached (under `BackgroundTasksMiddleware`). `running` and `waiting` count
    the requests whose tasks run or wait under the middlewares of the running apps; tasks run
    inline are part of their request, and are not counted there.

    Returns:
        A frozen `Stats` snapshot.
    """
    with _supervisors_lock:
        live = list(_supervisors)
    running = waiting = 0
    for supervisor in live:
        supervisor_waiting, supervisor_running = supervisor.counts()
        waiting += supervisor_waiting
        running += supervisor_running
    return Stats(**counts(), running=running, waiting=waiting)


def supervisor_stats(supervisor: Supervisor | None) -> Stats:
    """Return one supervisor's `Stats` (all zeros for None: a middleware before its startup)."""
    if supervisor is None:
        return Stats(**dict.fromkeys(OUTCOMES, 0), running=0, waiting=0)
    waiting, running = supervisor.counts()
    return Stats(**supervisor.outcomes.snapshot(), running=running, waiting=waiting)
