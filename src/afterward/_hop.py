"""The thread hop of inline sync tasks: afterward's own worker threads on asyncio.

`anyio.to_thread.run_sync` pays, per hop, a checkpoint (one more event-loop turn), a cancel scope,
two `RunVar` lookups and a per-thread queue. On asyncio the inline path hops instead to a
module-level `WorkerPool` and awaits a bare asyncio future that the worker completes with
`call_soon_threadsafe`, keeping afterward's semantics:

- Thread limit: a token of the limiter (the collector's, else afterward's default) is held from
  before the job is queued until its result is back, as `to_thread.run_sync` does. The pool starts
  a thread only when more jobs are queued than threads are idle, so the threads busy at once never
  exceed the tokens held; `POOL_SIZE` is only a ceiling far above any limiter's size.
- Cancellation, as AnyIO's: a cancel that finds the job not started yet takes it back (nothing
  ran); once started, the host task waits for the thread (shielded), the batch sees the cancel
  between tasks (`from_thread.check_cancelled()` reads the host's cancel scope, as in AnyIO's
  threads), the outcome is handed back, and the cancellation is raised at the next await. A
  cancel scope already cancelled before the hop stops it before anything is queued.
- A sync task can still call `anyio.from_thread.run*` and `from_thread.check_cancelled()`: the
  worker is claimed for the loop the way AnyIO claims its own threads (the one reliance on AnyIO's
  inside here, pinned by `tests/test_hop.py`).

Under trio (and with an AnyIO older than 4.11), `run_sync` is AnyIO's `to_thread.run_sync`; told
to abandon its thread when cancelled, so that `on_cancel` can name what the thread runs the moment
the cancellation arrives, and then waiting for the thread itself (`_AnyioHop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from anyio import (
    CancelScope,
    CapacityLimiter,
    Event,
    current_effective_deadline,
    get_cancelled_exc_class,
    to_thread,
)
from anyio.lowlevel import checkpoint

from ._anyio_seam import (
    OWN_THREAD_HOPS,
    claimed_for,
    host_cancel_scope,
    on_asyncio,
    scope_cancelled,
)
from ._loopcall import LoopCaller
from ._workers import WorkerPool

__all__ = ["POOL_SIZE", "HopJob", "current_job", "run_sync", "worker_pool"]

T = TypeVar("T")

POOL_SIZE = 1024
"""The most worker threads of the pool; the limiters bound how many are busy at once."""

_pool: WorkerPool | None = None
_pool_lock = threading.Lock()
_local = threading.local()  # `.job`: the HopJob this worker thread runs now


def worker_pool() -> WorkerPool:
    """Return the process's pool of worker threads for inline hops, started on first use."""
    global _pool
    pool = _pool
    if pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = WorkerPool(POOL_SIZE, name="afterward-hop")
            pool = _pool
    return pool


def current_job() -> HopJob[Any] | None:
    """Return the hop job this thread runs, or None outside of afterward's hop threads."""
    job: HopJob[Any] | None = getattr(_local, "job", None)
    return job


class HopJob(Generic[T]):
    """One function call handed to a worker thread, and its way back to the loop."""

    __slots__ = (
        "_gate",
        "_outcome",
        "args",
        "cancel_requested",
        "finished",
        "func",
        "loop",
        "scope",
        "waiter",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, func: Callable[..., T], args: Any) -> None:
        self.loop = loop
        self.func = func
        self.args = args
        self._gate = [True]  # popped once, by the worker (start) or the loop (take back): atomic
        self._outcome: tuple[bool, Any] | None = None  # (raised, result or exception)
        self.finished = False  # set on the loop thread, once the outcome is there
        self.cancel_requested = False
        self.waiter: asyncio.Future[None] = loop.create_future()
        # The host task's AnyIO cancel scope, read from the thread by `check_cancelled()`, as
        # AnyIO's own workers do: a cancel is seen there at once, not a loop turn later.
        self.scope: object = host_cancel_scope()

    @property
    def name(self) -> str:
        return getattr(self.func, "__qualname__", repr(self.func))

    def cancelled(self) -> bool:
        """Whether the host task was cancelled: a batch checks this between its tasks."""
        return self.cancel_requested or scope_cancelled(self.scope)

    def take_back(self) -> bool:
        """On the loop: withdraw the job if no worker has started it; return whether it was."""
        try:
            self._gate.pop()
        except IndexError:
            return False
        return True

    def run(self) -> None:
        """In a worker thread: run the call unless it was taken back, then wake the loop."""
        try:
            self._gate.pop()
        except IndexError:
            return  # taken back by a cancelled host task: nothing to run, nothing to report
        _local.job = self
        try:
            with claimed_for(self.loop, _CancelView(self)):
                self._outcome = (False, self.func(*self.args))
        except BaseException as exc:
            self._outcome = (True, exc)
        finally:
            _local.job = None
        worker_pool().returning()  # this worker takes the next job: see `WorkerPool.returning`
        with contextlib.suppress(RuntimeError):  # the loop has closed: no one waits any more
            self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self.finished = True
        if not self.waiter.done():
            self.waiter.set_result(None)

    def result(self) -> T:
        outcome, self._outcome = self._outcome, None  # no reference cycle through a traceback
        result: T = _hand_back(outcome)
        return result


class _CancelView:
    """What `anyio.from_thread.check_cancelled()` reads in a worker thread, for a hop job."""

    __slots__ = ("_job",)
    shield = False
    _parent_scope = None

    def __init__(self, job: HopJob[Any]) -> None:
        self._job = job

    @property
    def cancel_called(self) -> bool:
        return self._job.cancelled()


async def run_sync(
    func: Callable[..., T],
    *args: Any,
    limiter: CapacityLimiter,
    on_cancel: Callable[..., object] | None = None,
) -> T:
    """Call `func(*args)` in a worker thread under a token of `limiter`; return what it returns.

    On asyncio, in afterward's worker threads (see the module's docstring); `current_job()` in
    the thread tells `func` whether its host task was cancelled. Elsewhere (trio),
    `anyio.to_thread.run_sync`.

    Args:
        func: The function to call in the thread.
        args: Its arguments.
        limiter: The limiter whose token the thread holds.
        on_cancel: Called as `on_cancel(*args)` on the event loop when the host task is cancelled
            while `func` runs in its thread, the moment the cancellation arrives: the hop still
            waits for the thread (it cannot be stopped), and the process may not live that long
            (a server's shutdown deadline). Exceptions it raises are logged.
    """
    if not OWN_THREAD_HOPS or not on_asyncio():
        if on_cancel is None:
            return await to_thread.run_sync(func, *args, limiter=limiter)
        return await _run_in_anyio_thread(func, args, limiter, on_cancel)
    loop = asyncio.get_running_loop()
    deadline = current_effective_deadline()
    if deadline != math.inf and deadline <= loop.time():  # a cancel scope cancelled already
        await checkpoint()  # raises here, before anything is queued, as AnyIO's hop would
    async with limiter:
        job: HopJob[T] = HopJob(loop, func, args)
        worker_pool().submit(job)
        try:
            await job.waiter
        except asyncio.CancelledError:
            if job.take_back():
                raise  # no worker started it: nothing ran
            job.cancel_requested = True  # a batch stops before its next task
            if on_cancel is not None:
                _call_on_cancel(on_cancel, args)
            await _wait_shielded(job)
            _cancel_again()
        # Once started, the outcome is handed back, as AnyIO's shielded hop does: the caller
        # learns which task stopped the run; the cancellation is raised at its next await.
        return job.result()


def _cancel_again() -> None:
    """Re-arm a cancellation absorbed while a started job finished."""
    if current_effective_deadline() == -math.inf:
        return  # an AnyIO cancel scope: AnyIO delivers it again at the next await
    task = asyncio.current_task()
    assert task is not None
    uncancel = getattr(task, "uncancel", None)  # Python >= 3.11 counts cancel requests
    if uncancel is not None:
        uncancel()
    task.cancel()


async def _wait_shielded(job: HopJob[Any]) -> None:
    """Wait for a started job after the host task was cancelled: a thread cannot be stopped.

    The shielded scope keeps AnyIO from re-delivering the cancellation on every loop turn; a
    native `Task.cancel()` is absorbed by waiting again on a fresh future.
    """
    with CancelScope(shield=True):
        while not job.finished:
            job.waiter = job.loop.create_future()
            with contextlib.suppress(asyncio.CancelledError):
                await job.waiter


def _call_on_cancel(on_cancel: Callable[..., object], args: Any) -> None:
    try:
        on_cancel(*args)
    except Exception:
        logging.getLogger("afterward").exception(
            "Reporting the tasks a cancellation stops in a worker thread failed."
        )


async def _run_in_anyio_thread(
    func: Callable[..., T],
    args: Any,
    limiter: CapacityLimiter,
    on_cancel: Callable[..., object],
) -> T:
    """`anyio.to_thread.run_sync`, calling `on_cancel(*args)` when a cancellation arrives.

    AnyIO's hop, told to abandon its thread when cancelled, raises the cancellation the moment
    it arrives: then `on_cancel` names what the thread runs, and the hop goes on waiting for the
    thread (shielded) before the outcome is handed back, as AnyIO's own waiting hop does. (A
    sibling task watching for the cancellation, as this was written before, cost a task group and
    a task per hop: trio's one sync task ran at half Starlette's rate.)
    """
    hop = _AnyioHop(func, args)
    if on_asyncio():
        # AnyIO's asyncio hop gives its token back when it abandons the thread: the token is
        # held here instead, until the thread is done.
        async with limiter:
            return await hop.run(CapacityLimiter(math.inf), on_cancel)
    # Trio's gives it back when the thread is done: as it takes in the thread's end, which may
    # be a loop turn after a cancelled host has gone on (never before the thread has returned).
    return await hop.run(limiter, on_cancel)


class _AnyioHop(Generic[T]):
    """One call of `func(*args)` in one of AnyIO's worker threads, which may be abandoned."""

    __slots__ = ("args", "done", "func", "outcome", "unclaimed", "waiter")

    def __init__(self, func: Callable[..., T], args: Any) -> None:
        self.func = func
        self.args = args
        # Whoever pops it first: the thread, to call `func`, or a cancelled host, to take the
        # call back before it started (`list.pop` is atomic).
        self.unclaimed = [True]
        self.outcome: tuple[bool, Any] | None = None  # (raised, result or exception)
        self.done = False
        self.waiter: tuple[Event, LoopCaller] | None = None  # once the host waits for `done`

    async def run(self, limiter: CapacityLimiter, on_cancel: Callable[..., object]) -> T:
        try:
            return await to_thread.run_sync(self.call, limiter=limiter, abandon_on_cancel=True)
        except get_cancelled_exc_class():
            if _claim(self.unclaimed):
                raise  # the thread had not started `func`: nothing ran
            if not self.done:
                _call_on_cancel(on_cancel, self.args)
                await self.wait_done()
            # The thread returned after the cancellation: hand the outcome back, as AnyIO's
            # hop does, and let the cancellation be raised at the next await (AnyIO's cancel
            # scopes deliver it again; a native asyncio cancel is re-armed).
            if on_asyncio():
                _cancel_again()
        except BaseException:
            self.outcome = None  # raised as it is: no reference cycle through its traceback
            raise
        outcome, self.outcome = self.outcome, None  # no reference cycle through a traceback
        result: T = _hand_back(outcome)
        return result

    def call(self) -> Any:
        """In the worker thread: call `func`, unless a cancelled host took the call back."""
        if not _claim(self.unclaimed):
            return None
        try:
            result = self.func(*self.args)
        except BaseException as exc:
            self.outcome = (True, exc)
            raise
        else:
            self.outcome = (False, result)
            return result
        finally:
            self.done = True
            waiter = self.waiter  # read after `done` is written; the host writes in reverse
            if waiter is not None:
                event, loop = waiter
                loop.call_soon(event.set)

    async def wait_done(self) -> None:
        """Wait for the thread, shielded: it cannot be stopped, and its outcome is handed back."""
        with CancelScope(shield=True):
            event = Event()
            self.waiter = (event, LoopCaller.current())
            if not self.done:
                await event.wait()


def _hand_back(outcome: tuple[bool, Any] | None) -> Any:
    """Return what a thread's function returned, or raise what it raised."""
    assert outcome is not None
    raised, value = outcome
    if raised:
        raise value
    return value


def _claim(unclaimed: list[bool]) -> bool:
    try:
        return unclaimed.pop()
    except IndexError:
        return False
