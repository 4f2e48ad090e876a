"""The Supervisor: runs requests' collectors after their responses, for the app's whole lifetime.

`BackgroundTasksMiddleware` starts one per app on lifespan startup and hands it each request's
collector once the response has gone out; the request's ASGI call then returns at once. The
supervisor runs the collector's entries in order, as the runner does inline, but on its own:

- a run of sync entries is one job for afterward's worker threads (`_workers.WorkerPool`), put on
  their queue without awaiting anything; it comes back to the event loop only if an async entry of
  the same collector follows;
- async entries run in the supervisor's task group, at most `max_running` collectors at once;
- at most `max_waiting` collectors wait for a slot or a thread; past that a hand-off waits up to
  `handoff_timeout` seconds (backpressure on the request), then the tasks are logged, by name, at
  ERROR as not run;
- `drain()` stops accepting, waits up to `drain_timeout` seconds, then cancels what is still
  running on the loop and names every task it abandons and how: cancelled, never started, or
  still running in its thread (a thread cannot be cancelled).
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from contextvars import Context
from typing import Any, cast

import anyio
import anyio.abc
from anyio.abc import TaskGroup

from . import _recording as recording
from ._call import Call
from ._events import listeners, scopes
from ._failures import report_failure_now
from ._loopcall import LoopCaller
from ._report import entry_name, log_not_run, logger, names, task_extra
from ._runner import is_batchable, run_sync_batch, run_tasks, settle_sync_stop
from ._stats import Outcomes, register
from ._tasks import BackgroundTasks
from ._tasks import seal as _seal
from ._tracing import active_hook
from ._workers import WorkerPool

__all__ = ["Supervisor"]

# What ended a worker's run of sync entries and must be settled on the loop: the entry (None
# for an async on_error to await), the context it ran in, and the awaitable.
_SyncStop = tuple["Call | None", Context, object]


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    DRAINING = "draining"
    CLOSED = "closed"


class Supervisor:
    """Run collectors detached from their requests, within limits, until drained.

    Args:
        max_running: Collectors whose async entries may run at once on the event loop.
        max_waiting: Collectors that may wait for a running slot or a worker thread.
        workers: Worker threads for sync entries (at most this many sync tasks run at once).
        drain_timeout: Seconds `drain()` waits for waiting and running tasks.
        handoff_timeout: Seconds a hand-off waits for room when `max_waiting` is reached.
    """

    def __init__(
        self,
        *,
        max_running: int,
        max_waiting: int,
        workers: int,
        drain_timeout: float,
        handoff_timeout: float,
    ) -> None:
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.drain_timeout = drain_timeout
        self.handoff_timeout = handoff_timeout
        # The lazy policy: a detached job is never awaited, so wake-ups matter more than latency.
        self._pool = WorkerPool(workers, patience=0.01)
        self._slots = anyio.CapacityLimiter(max_running)
        self._lock = threading.Lock()
        self._take_lock = threading.Lock()  # see `_SyncRun._lock`
        self._waiting = 0  # accepted, not started
        self._active = 0  # started, not finished (on the loop or in a thread)
        self._room: anyio.Event | None = None  # set when a waiting place frees up
        self._idle: anyio.Event | None = None  # set when nothing waits or runs
        self._state = _State.NEW
        self._task_group: TaskGroup | None = None
        self._loop: LoopCaller | None = None
        self._loop_thread = 0
        self._stopped = anyio.Event()
        # How the tasks handed to it ended, for the middleware's stats(); under `_lock`.
        self.outcomes = Outcomes(self._lock)
        register(self)

    @property
    def running(self) -> bool:
        """Whether hand-offs are accepted (between startup and the start of the drain)."""
        return self._state is _State.RUNNING

    def counts(self) -> tuple[int, int]:
        """Return `(waiting, active)`: collectors accepted but not started, and started ones."""
        with self._lock:
            return self._waiting, self._active

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[Supervisor]:
        """Accept and run collectors inside this block; drain on the way out."""
        if self._state is not _State.NEW:
            raise RuntimeError("A Supervisor serves once; create a new one for each app run.")
        self._loop = LoopCaller.current()
        self._loop_thread = threading.get_ident()
        async with anyio.create_task_group() as outer:
            # The runs live in a task group of their own, in a task of their own: cancelling
            # them at the drain deadline must not cancel the code inside this block (the app's
            # own lifespan, which still has to answer the server).
            await outer.start(self._host)
            self._state = _State.RUNNING
            try:
                yield self
            finally:
                if self._state is not _State.CLOSED:
                    with anyio.CancelScope(shield=True):
                        await self.drain()
                self._stopped.set()

    async def _host(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with anyio.create_task_group() as runs:
            self._task_group = runs
            task_status.started()
            await self._stopped.wait()
        self._task_group = None

    def try_submit(self, collector: BackgroundTasks) -> bool:
        """Take `collector` if there is room now, without awaiting; return whether it was taken.

        The request's fast path: when it returns False (the supervisor is not running, or
        `max_waiting` collectors already wait), `submit()` does the rest.
        """
        if self._state is not _State.RUNNING:
            return False
        if recording.recorder is not None and recording.intercept(collector):
            return True  # afterward.testing.record_tasks() is on: recorded, not run
        # `acquire`/`release` rather than `with` on the per-request paths (here, `_start`,
        # `_finish`, `_SyncRun._take`): a `with` looks up and binds two methods, twice the
        # instructions (see `_workers.py`).
        self._lock.acquire()
        try:
            if self._waiting >= self.max_waiting:
                return False
            self._waiting += 1
        finally:
            self._lock.release()
        self._dispatch(collector, first=True)
        return True

    async def submit(self, collector: BackgroundTasks) -> None:
        """Take `collector` to run its pending tasks; return once it has been queued.

        Waits (up to `handoff_timeout`) only when `max_waiting` collectors already wait.
        Tasks that cannot be taken are logged by name at ERROR; nothing is raised.
        """
        if self._state is not _State.RUNNING:
            log_not_run(collector, "the app is shutting down", logging.ERROR)
            self.outcomes.tally(collector.tasks)
            return
        if recording.recorder is not None and recording.intercept(collector):
            return  # afterward.testing.record_tasks() is on: recorded, not run
        try:
            room = self._reserve() or await self._wait_for_room()
        except BaseException as exc:
            # The request was cancelled while it waited for room (a server shutting down, a
            # timeout middleware): its tasks were never taken, so they are named here.
            log_not_run(
                collector,
                f"the request was cancelled ({type(exc).__name__}) while it waited for room "
                f"to hand them off (max_waiting={self.max_waiting})",
                logging.WARNING,
            )
            self.outcomes.tally(collector.tasks)
            raise
        if not room:
            log_not_run(
                collector,
                f"{self.max_waiting} requests' tasks were already waiting (max_waiting) and "
                f"none started within {self.handoff_timeout:g} s (handoff_timeout)",
                logging.ERROR,
            )
            self.outcomes.tally(collector.tasks)
            return
        self._dispatch(collector, first=True)

    async def wait_idle(self) -> None:
        """Return once no collector waits or runs."""
        while True:
            with self._lock:
                if self._waiting == 0 and self._active == 0:
                    return
                if self._idle is None:
                    self._idle = anyio.Event()
                idle = self._idle
            await idle.wait()

    async def drain(self) -> None:
        """Stop accepting, wait up to `drain_timeout` for the tasks, then abandon the rest."""
        if self._state in (_State.DRAINING, _State.CLOSED):
            return
        self._state = _State.DRAINING
        idle = False
        try:
            with anyio.move_on_after(self.drain_timeout):
                await self.wait_idle()
                idle = True
        finally:
            # Also when the drain itself is cancelled (a server that gives up on the lifespan):
            # what it abandons is still named before the cancellation goes on.
            self._state = _State.CLOSED
            if idle:
                self._pool.close()  # nothing is queued or running: the idle workers just exit
            else:
                self._abandon()

    # -- accounting (shared by the event loop and the worker threads) ------------------------

    def _reserve(self) -> bool:
        with self._lock:
            if self._waiting >= self.max_waiting:
                return False
            self._waiting += 1
            return True

    async def _wait_for_room(self) -> bool:
        with anyio.move_on_after(self.handoff_timeout):
            while True:
                with self._lock:
                    if self._room is None:
                        self._room = anyio.Event()
                    room = self._room
                await room.wait()
                if self._reserve():
                    return True
        return False

    def _start(self) -> None:
        """A collector starts: it leaves the waiting places."""
        self._lock.acquire()
        try:
            self._waiting -= 1
            self._active += 1
            room, self._room = self._room, None
        finally:
            self._lock.release()
        if room is not None:
            self._call_on_loop(room.set)

    def _finish(self, collector: BackgroundTasks) -> None:
        """A collector's run has ended: it takes no more tasks."""
        _seal(collector)
        self._lock.acquire()
        try:
            self.outcomes.tally_locked(collector.tasks)
            self._active -= 1
            idle = None
            if self._waiting == 0 and self._active == 0:
                idle, self._idle = self._idle, None
        finally:
            self._lock.release()
        if idle is not None:
            self._call_on_loop(idle.set)

    def _call_on_loop(self, func: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            func()
        elif self._loop is not None:
            self._loop.call_soon(func)

    # -- running --------------------------------------------------------------------------------

    def _dispatch(self, collector: BackgroundTasks, *, first: bool) -> None:
        # Runs of plain sync entries go to the worker threads; anything else (an entry with a
        # policy, a collector with concurrency, a tracing hook, event callbacks or attempt
        # scopes) runs on the loop, where a sync attempt hops to a thread on its own.
        if (
            is_batchable(collector.next_pending())
            and collector.concurrency == 1
            and not (listeners or scopes)
            and active_hook() is None
        ):
            self._pool.submit(_SyncRun(self, collector, first))
        elif self._task_group is not None and self._state is not _State.CLOSED:
            self._task_group.start_soon(self._run_async, collector, first, None)
        else:
            if first:
                self._start()
            log_not_run(collector, "the app shut down before they started", logging.ERROR)
            self._finish(collector)

    async def _run_async(
        self, collector: BackgroundTasks, first: bool, stop: _SyncStop | None
    ) -> None:
        """Run the collector's entries on the loop until the next sync one, in a running slot.

        `stop` is what ended a worker's run of sync entries, if it must be settled on the loop
        first (an awaitable a sync task returned, or an async `on_error` to await).
        """
        started = not first
        try:
            async with self._slots:
                if first:
                    self._start()
                    started = True
                if stop is not None:
                    await _settle(collector, stop)
                await run_tasks(collector, until_sync=True)
        except BaseException:
            if not started:
                self._start()
                log_not_run(
                    collector,
                    "the app shut down before they started (drain_timeout expired)",
                    logging.ERROR,
                )
            self._finish(collector)
            raise
        if collector.has_pending():
            # The next entry is sync: it goes to the worker threads, still counted as active.
            self._pool.submit(_SyncRun(self, collector, first=False))
        else:
            self._finish(collector)

    def _resume_on_loop(self, collector: BackgroundTasks, stop: _SyncStop | None) -> None:
        """Called on the loop when a worker's run of sync entries left work for the loop."""
        if self._task_group is None or self._state is _State.CLOSED:
            log_not_run(collector, "the app shut down before they started", logging.ERROR)
            self._finish(collector)
            return
        self._task_group.start_soon(self._run_async, collector, False, stop)

    def _abandon(self) -> None:
        for job in self._pool.close():
            if isinstance(job, _SyncRun):
                if job.first:
                    self._start()
                log_not_run(
                    job.collector,
                    f"the app shut down before they started (drain_timeout of "
                    f"{self.drain_timeout:g} s expired)",
                    logging.ERROR,
                )
                self._finish(job.collector)
        for job in self._pool.running():
            if isinstance(job, _SyncRun) and not job.done:
                job.abandon(self.drain_timeout)
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()


class _OnError:
    """What an async `on_error` returned for a task that failed in a worker thread."""

    __slots__ = ("pending",)

    def __init__(self, pending: Awaitable[object]) -> None:
        self.pending = pending


class _Abandoned(Exception):
    """Raised in a worker thread, between two tasks, once the drain deadline has passed."""


class _SyncRun:
    """A collector's next run of sync entries, as one job for a worker thread."""

    __slots__ = ("_abandoned", "_lock", "collector", "current", "done", "first", "supervisor")

    def __init__(self, supervisor: Supervisor, collector: BackgroundTasks, first: bool) -> None:
        self.supervisor = supervisor
        self.collector = collector
        self.first = first
        self.current: Call | None = None
        self._abandoned = False
        self.done = False  # its part of the collector is over (run, handed back, or abandoned)
        # Taking the next task and abandoning the rest must not interleave. One lock for all of
        # the supervisor's jobs, not one made per request: it is only ever contended at the
        # drain deadline.
        self._lock = supervisor._take_lock

    def abandon(self, timeout: float) -> None:
        """At the drain deadline: name the running task, and stop before the next one."""
        with self._lock:
            self._abandoned = True
            current = self.current
            never_started = self.collector.skip_pending()
        logger.error(
            "Background task %s is still running in its worker thread after the drain_timeout "
            "of %g s; a thread cannot be cancelled, so it is abandoned as it is. %d task(s) "
            "after it never started: %s.",
            entry_name(current) if current is not None else "(none)",
            timeout,
            len(never_started),
            names(never_started) or "none",
            extra=task_extra(current, "abandoned", 1, None) if current is not None else None,
        )

    def run(self) -> None:
        supervisor, collector = self.supervisor, self.collector
        if self.first:
            supervisor._start()
        try:
            handed_back = self._run_entries()
        finally:
            self.done = True
        if not handed_back:
            supervisor._finish(collector)

    def _take(self, collector: object) -> Call | None:
        # The tracing hook was checked once, when the job was queued: a run of sync entries goes
        # on without it (the hook is for tools installed at startup, not mid-run).
        self._lock.acquire()
        try:
            if self._abandoned:
                raise _Abandoned
            tasks = self.collector
            entry = tasks.next_pending()
            if not is_batchable(entry):
                return None
            tasks._next += 1  # take_next(), without looking the entry up a second time
            self.current = cast(Call, entry)
            return self.current
        finally:
            self._lock.release()

    def _run_entries(self) -> bool:
        """Run sync entries from the cursor on; return whether the loop took over the rest."""
        collector = self.collector
        while (entry := self._take(collector)) is not None:
            stop = run_sync_batch(collector, entry, self._take)
            if stop is None:
                break
            stopped, context, outcome = stop
            if isinstance(outcome, _Abandoned):
                return False  # named by abandon(), which skipped the rest
            if isinstance(outcome, Exception) and stopped is not None:
                pending = report_failure_now(collector, stopped, outcome)
                if pending is None:
                    continue
                # An async on_error: awaited on the loop, before the next task.
                return self._hand_back((stopped, context, _OnError(pending)))
            if isinstance(outcome, BaseException):  # SystemExit, KeyboardInterrupt in a task
                never_started = collector.skip_pending()
                logger.error(
                    "Background task %s was interrupted by %s in its worker thread; %d task(s) "
                    "after it never started: %s.",
                    entry_name(stopped),
                    type(outcome).__name__,
                    len(never_started),
                    names(never_started) or "none",
                    extra=task_extra(stopped, "failed", 1, stopped._duration if stopped else None),
                )
                return False
            # A sync function returned an awaitable: awaited on the loop, in its context.
            return self._hand_back(stop)
        self.current = None
        if self._abandoned or not collector.has_pending():
            return False
        return self._hand_back(None)

    def _hand_back(self, stop: _SyncStop | None) -> bool:
        supervisor, collector = self.supervisor, self.collector
        loop = supervisor._loop
        if loop is None or not loop.call_soon(supervisor._resume_on_loop, collector, stop):
            log_not_run(collector, "the event loop has closed", logging.ERROR)
            return False
        return True


async def _settle(collector: BackgroundTasks, stop: _SyncStop) -> None:
    entry, context, outcome = stop
    if not isinstance(outcome, _OnError):
        await settle_sync_stop(collector, entry, context, outcome)
        return
    try:
        await outcome.pending
    except Exception:
        logger.exception("The on_error callback failed while handling %s.", entry_name(entry))
