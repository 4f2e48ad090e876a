"""afterward's own pool of long-lived worker threads, fed through a queue.

Under load, what a sync background task costs the server is not the thread hop itself but the GIL
hand-offs between the event-loop thread and busy worker threads, and the wake-up back to the loop.
So detached runs do not hop: the request puts a job in this pool's queue and goes on. Idle workers
block on the queue; a submit wakes at most one of them, and only when no woken worker is already
on its way; a busy worker takes the next job without waiting, so under load nothing is notified.
Threads start on demand, up to `size`, and stay.

The pool knows nothing about tasks: a job is any object with a `run()` method and a `name` for the
log. What a worker is running is visible (`running()`), so a shutdown can name what it could not
stop: a thread cannot be cancelled.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Protocol

__all__ = ["Job", "WorkerPool"]

logger = logging.getLogger("afterward")


class Job(Protocol):
    """Work for the pool: `run()` is called in a worker thread and must not raise."""

    def run(self) -> None: ...


class WorkerPool:
    """A bounded pool of daemon threads that run jobs from one queue.

    Args:
        size: The most threads that run at once (at least 1).
        name: Prefix of the threads' names.
    """

    def __init__(self, size: int, *, name: str = "afterward-worker") -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"The worker pool size must be a whole number >= 1, got {size!r}.")
        self.size = size
        self.name = name
        self._queue: deque[Job] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting on the queue
        self._waking = 0  # of those, how many were notified and have not taken work yet
        self._running: dict[int, Job] = {}  # thread ident -> the job it runs now
        self._closed = False

    def submit(self, job: Job) -> None:
        """Queue `job`; a worker runs it soon. Never blocks on the job.

        Raises:
            RuntimeError: the pool has been closed.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("This worker pool has been closed and accepts no more jobs.")
            self._queue.append(job)
            if self._idle > self._waking:
                self._waking += 1
                self._ready.notify()
            elif len(self._queue) > self._idle and len(self._threads) < self.size:
                # Every idle worker is already on its way and there is more than they can take.
                self._start_thread()

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
            self._ready.notify_all()
        return never_started

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self.name}-{len(self._threads) + 1}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        ident = threading.get_ident()
        while True:
            with self._lock:
                while not self._queue:
                    if self._closed:
                        return
                    self._idle += 1
                    self._ready.wait()
                    self._idle -= 1
                    if self._waking:
                        self._waking -= 1
                # One job at a time, but a busy worker goes straight on to the next without
                # waiting: under load no one is notified, and one blocking job holds up nothing
                # queued behind it while other workers are free.
                job = self._queue.popleft()
                self._running[ident] = job
                if self._queue and self._idle > self._waking:
                    self._waking += 1
                    self._ready.notify()
            try:
                job.run()
            except BaseException:  # a job must not raise; if one does, the worker survives
                logger.exception("An afterward worker job raised; this is a bug in afterward.")
            finally:
                with self._lock:
                    del self._running[ident]
