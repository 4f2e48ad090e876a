"""afterward's own pool of long-lived worker threads, fed through a queue.

Under load, what a sync background task costs the server is not the thread hop itself but the GIL
hand-offs between the event-loop thread and busy worker threads, and the wake-ups. So detached runs
do not hop: the request puts a job in this pool's queue and goes on, and the pool wakes as few
threads as it can:

- A submit wakes a parked worker only when no worker is awake. While one is awake (running a job,
  or about to look for the next), it drains the queue on its own: under load nothing is woken,
  and a burst of jobs costs one wake-up, not one per job. (With the GIL, a second thread running
  short Python tasks would not make them go faster, only hand the GIL back and forth.)
- The policy for blocking tasks: one parked worker, the *watchman*, waits with a timeout of
  `patience` seconds instead of forever. When it finds the queue's first job unchanged since its
  previous look, no awake worker is taking jobs (they are all inside long tasks), so it wakes
  another parked worker for the queue, or takes the job itself and starts a new thread to watch
  in its place. So a queued job waits at most about twice `patience` for a worker while others are
  blocked, as long as fewer than `size` tasks block; an idle pool pays for one wake-up per
  `patience` seconds.
- Parked workers wait on a lock of their own (a C-level wait, no `threading.Condition`).

That is the lazy policy, for detached runs (`patience` given). Without `patience`, the pool is
eager, for callers that await each job (the inline hop, `_hop`): a submit wakes a parked worker, or
starts a thread, whenever more jobs are queued than workers are on their way to the queue, so jobs
never wait for each other while threads are free.

Threads start on demand, up to `size`, and stay. The pool knows nothing about tasks: a job is any
object with a `run()` method. What a worker is running is visible (`running()`), so a shutdown can
name what it could not stop: a thread cannot be cancelled.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Protocol

__all__ = ["Job", "WorkerPool"]

logger = logging.getLogger("afterward")

_EMPTY = object()  # the watchman's "first queued job" when the queue was empty


class Job(Protocol):
    """Work for the pool: `run()` is called in a worker thread and must not raise."""

    def run(self) -> None: ...


class WorkerPool:
    """A bounded pool of daemon threads that run jobs from one queue.

    Args:
        size: The most threads that run at once (at least 1).
        name: Prefix of the threads' names.
        patience: Lazy policy: seconds between the watchman's looks at the queue (see the module
            docstring), how long a queued job may wait for another worker while the awake ones
            are busy. None (the default): the eager policy.
    """

    def __init__(
        self, size: int, *, name: str = "afterward-worker", patience: float | None = None
    ) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"The worker pool size must be a whole number >= 1, got {size!r}.")
        self.size = size
        self.name = name
        self.patience = patience
        self._queue: deque[Job] = deque()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        # Workers not parked. Written under the lock only; `submit` reads it without the lock,
        # which is safe because a worker lowers it *before* it looks at the queue a last time,
        # and `submit` appends to the queue *before* it reads it: one of the two sees the other.
        self._awake = 0
        self._parked: list[threading.Lock] = []  # gates of workers waiting without a timeout
        self._watchman: threading.Lock | None = None  # gate of the worker waiting with one
        self._coming = 0  # eager policy: workers woken or started that have not looked yet
        self._running: dict[int, Job] = {}  # thread ident -> the job it runs now
        self._closed = False

    def submit(self, job: Job) -> None:
        """Queue `job`; a worker runs it soon. Never blocks on the job.

        Raises:
            RuntimeError: the pool has been closed.
        """
        if self._closed:
            raise RuntimeError("This worker pool has been closed and accepts no more jobs.")
        self._queue.append(job)
        if self._closed:  # closed meanwhile, from another thread: the job must not be lost
            with self._lock:
                if job in self._queue:
                    self._queue.remove(job)
                    raise RuntimeError("This worker pool has been closed and accepts no more jobs.")
            return  # a worker took it before the close
        # (`acquire`/`release` rather than `with`, here and in `_work`: half the instructions,
        # on paths run for every job.)
        if self.patience is None:
            self._lock.acquire()
            try:
                if len(self._queue) > self._coming:
                    if self._parked:
                        self._coming += 1
                        self._wake_one()
                    elif len(self._threads) < self.size:
                        self._coming += 1
                        self._start_thread()
            finally:
                self._lock.release()
            return
        if self._awake:
            return  # an awake worker will take it
        self._lock.acquire()
        try:
            if self._awake or not self._queue:
                return
            if not self._wake_one() and len(self._threads) < self.size:
                self._start_thread()
            self._keep_watch()
        finally:
            self._lock.release()

    def returning(self) -> None:
        """In a worker thread, eager policy: its job is about to hand its result back.

        The worker looks at the queue next, so it is counted as on its way there: a submit
        made in the meantime (the caller, woken by that result, hops again at once) must not
        start a thread for a job this worker is about to take. Without this, a pool under a
        steady stream of hops grew well past the limiter's size, one thread per such race.
        """
        with self._lock:
            self._coming += 1

    def queued(self) -> int:
        """Return how many jobs wait for a worker."""
        return len(self._queue)

    def running(self) -> list[Job]:
        """Return the jobs being run right now."""
        with self._lock:
            return list(self._running.values())

    def close(self) -> list[Job]:
        """Stop accepting jobs; return those that never started. Running ones go on.

        Idle workers exit; busy ones exit when their current job returns.
        """
        with self._lock:
            self._closed = True
            never_started = list(self._queue)
            self._queue.clear()
            while self._wake_one():
                pass
        return never_started

    # -- under the lock -------------------------------------------------------------------------

    def _wake_one(self) -> bool:
        """Wake a parked worker, the watchman last; return False if none is parked."""
        if self._parked:
            gate = self._parked.pop()  # the most recently parked: its cache is the warmest
        elif self._watchman is not None:
            gate, self._watchman = self._watchman, None
        else:
            return False
        self._awake += 1
        gate.release()
        return True

    def _keep_watch(self) -> None:
        """Start a watchman if none waits and there is room for a thread (see the docstring)."""
        if (
            self.patience is not None
            and self._watchman is None
            and not self._parked
            and len(self._threads) < self.size
        ):
            self._start_thread(watch=True)

    def _start_thread(self, *, watch: bool = False) -> None:
        gate = threading.Lock()
        gate.acquire()  # held: the worker's next wait blocks until someone releases it
        thread = threading.Thread(
            target=self._work, args=(gate, watch), name=f"{self.name}-{len(self._threads) + 1}"
        )
        thread.daemon = True
        self._threads.append(thread)
        if not watch:  # a watchman is never counted awake: a submit must not count on it
            self._awake += 1
        thread.start()

    # -- in the worker threads ------------------------------------------------------------------

    def _work(self, gate: threading.Lock, watch: bool) -> None:
        ident = threading.get_ident()
        queue, running = self._queue, self._running
        acquire, release = self._lock.acquire, self._lock.release
        if watch and not self._park(gate, watch=True):  # it parks before anything else
            return
        job: Job | None = None
        taken: Job | None
        while True:
            # One lock round trip per job: the finished job leaves `running` as the next one is
            # taken. (`acquire`/`release`, not `with`: a `with` looks up and binds two methods,
            # twice the instructions, and this runs once per job, holding the GIL.)
            acquire()
            try:
                if job is not None:
                    del running[ident]
                if queue:
                    if self._coming:  # eager policy: this worker may be one on its way
                        self._coming -= 1
                    # Taken and shown as running in one step: a shutdown sees every job either
                    # as never started or as running.
                    taken = running[ident] = queue.popleft()
                else:
                    taken = None
            finally:
                release()
            # The finished job is let go here, outside the lock: freeing its tasks' arguments
            # may run any code (a `__del__`), which must not find the pool locked.
            job = taken
            if job is None:
                if not self._park(gate):
                    return
                continue
            try:
                job.run()
            except BaseException:  # a job must not raise; if one does, the worker survives
                logger.exception("An afterward worker job raised; this is a bug in afterward.")

    def _park(self, gate: threading.Lock, *, watch: bool = False) -> bool:
        """Wait until there may be work; return False when the pool has closed: the worker exits.

        `watch`: a thread started as watchman, never counted awake; it waits, even with jobs
        queued (the awake workers take those, or its first look finds them stuck).
        """
        with self._lock:
            if not watch:
                self._awake -= 1
                if self._queue:  # a submit came in after the worker found the queue empty
                    self._awake += 1
                    return True
                # No longer on its way to the queue: it parks. Counted as coming until now, in
                # the same lock hold as it shows up parked, so a submit in between sees it one
                # way or the other and starts no thread for a job this worker would take.
                if self._coming:
                    self._coming -= 1
            if self._closed:
                return False
            watching = self.patience is not None and self._watchman is None
            if watching:
                self._watchman = gate
            else:
                self._parked.append(gate)
        if not watching:
            gate.acquire()  # released by `_wake_one`, which counted this worker awake
            return True
        seen: object = _EMPTY
        while not gate.acquire(timeout=self.patience or 0):
            with self._lock:
                if self._watchman is not gate:
                    # Woken just as the wait timed out: the release is there to take.
                    gate.acquire()
                    break
                if self._closed:
                    self._watchman = None
                    return False
                first = self._queue[0] if self._queue else _EMPTY
                if first is _EMPTY or first is not seen:
                    seen = first  # nothing queued, or the queue moved on: the awake ones cope
                    continue
                # The same job has been first for a whole `patience`: the awake workers are all
                # inside long tasks. Wake another for the queue, or go and start a new watchman.
                if self._wake_one_parked():
                    seen = _EMPTY
                    continue
                self._watchman = None
                self._awake += 1
                self._keep_watch()
                return True
        return True

    def _wake_one_parked(self) -> bool:
        if not self._parked:
            return False
        self._awake += 1
        self._parked.pop().release()
        return True
