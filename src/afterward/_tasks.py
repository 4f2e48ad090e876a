"""The model: one task (`BackgroundTask`) and the per-request collector (`BackgroundTasks`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextvars import copy_context
from time import time as _now
from typing import TYPE_CHECKING, Any

from starlette.background import BackgroundTask as _StarletteTask
from starlette.background import BackgroundTasks as _StarletteTasks
from typing_extensions import ParamSpec

from ._backend import Backend, check_backend, enqueue_entries, take_pending
from ._callables import check_call
from ._events import emit, listeners
from ._report import names
from ._runner import run_tasks
from ._task import BackgroundTask
from ._transitions import abandon

if TYPE_CHECKING:
    from anyio import CapacityLimiter

__all__ = [
    "BackgroundTask",
    "BackgroundTasks",
    "ErrorCallback",
    "new_collector",
    "seal",
    "unseal",
]

P = ParamSpec("P")

ErrorCallback = Callable[[_StarletteTask, Exception], "Awaitable[object] | object"]
"""`on_error(task, exc)`: called on the event loop after a task raised, before the next one runs."""


class BackgroundTasks(_StarletteTasks):
    """The tasks of one request, run in order after its response has been sent.

    A drop-in for `starlette.background.BackgroundTasks` (and a subclass of it, so every Starlette
    response accepts it as `background=`): sync functions run in worker threads on afterward's own
    limiter, a run of consecutive sync tasks in a single thread hop; async functions are awaited on
    the event loop. A task that raises is logged by name and the next one still runs.

    Each entry runs at most once: running the collector again runs only the tasks added since.

    Args:
        tasks: Initial tasks, e.g. Starlette `BackgroundTask` objects.
        stop_on_error: Stop at the first failing task, as Starlette does. The remaining tasks are
            logged by name as skipped; the error is still not raised to the server.
        on_error: `on_error(task, exc)`, sync or async, called after a task raised.
        limiter: Limiter for the worker threads of sync tasks. Defaults to
            `afterward.current_default_thread_limiter()`.
        concurrency: How many of its tasks may run at once (default 1: one after the other,
            in order). Above 1, the order in which they start is still the order of
            `add_task`, but they end in any order.
        backend: Where the tasks run (see `afterward.Backend`): each task is checked by
            `backend.validate` when it is added, and running the collector hands its tasks to
            `backend.enqueue` instead of running them here. None (the default): in this process.

    Raises:
        TypeError: `on_error` is not callable, or `concurrency` is not a whole number >= 1.
    """

    tasks: list[_StarletteTask]
    stop_on_error: bool = False
    on_error: ErrorCallback | None = None
    limiter: CapacityLimiter | None = None
    concurrency: int = 1
    backend: Backend | None = None
    _next: int = 0  # index of the first task that has not been started yet
    _running = False  # a run is in progress (see `__call__`)
    _holders = 0  # FastAPI drop-in requests that will still run it (see `seal`)

    def __init__(
        self,
        tasks: Sequence[_StarletteTask] | None = None,
        *,
        stop_on_error: bool = False,
        on_error: ErrorCallback | None = None,
        limiter: CapacityLimiter | None = None,
        concurrency: int = 1,
        backend: Backend | None = None,
    ) -> None:
        if on_error is not None and not callable(on_error):
            raise TypeError(
                f"on_error must be a callable taking (task, exception), got {on_error!r}."
            )
        if concurrency != 1 or type(concurrency) is not int:
            if type(concurrency) is not int or concurrency < 1:
                raise TypeError(
                    f"concurrency must be a whole number >= 1 (how many tasks may run at once), "
                    f"got {concurrency!r}."
                )
            self.concurrency = concurrency
        self.tasks = list(tasks) if tasks else []
        # The defaults are class attributes: a collector per request costs one attribute less each.
        if stop_on_error:
            self.stop_on_error = True
        if on_error is not None:
            self.on_error = on_error
        if limiter is not None:
            self.limiter = limiter
        if backend is not None:
            self.use_backend(backend)

    def __repr__(self) -> str:
        return f"<BackgroundTasks [{names(self.tasks)}]>"

    def add_task(  # type: ignore[override]  # Starlette's returns None: the handle is extra
        self, func: Callable[P, Any], *args: P.args, **kwargs: P.kwargs
    ) -> BackgroundTask:
        """Add `func(*args, **kwargs)` to run after the response; return its handle.

        `func` may be an `afterward.task`: the entry runs its function with its policy.

        Returns:
            The entry, an `afterward.BackgroundTask`: its `status`, `exception`, timings and
            `await wait()` tell what became of it. (Starlette's `add_task` returns None.)

        Raises:
            TypeError: `func` is not callable, is a coroutine object (`f()` instead of `f`), or the
                arguments do not match its signature.
        """
        shape = check_call(func, args, kwargs)
        # `BackgroundTask(func, *args, **kwargs)` without `__init__`, which would pack the
        # arguments a second time and check them again: 0.25 µs of an add_task of 0.85 µs
        # (timeit, CPython 3.11). What `_task._fill` writes, written out: its call cost ~550
        # instructions per task (callgrind). `test_tasks` checks that both write the same.
        task: Any = object.__new__(BackgroundTask)  # Any: Starlette types `func` by its own P
        if shape.policy is None:
            task.func = func
            task._plain = True
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
        if self.backend is not None:
            self.backend.validate(task)
        self.tasks.append(task)
        if listeners:
            emit("queued", task, 0)
        handle: BackgroundTask = task
        return handle

    def use_backend(self, backend: Backend) -> None:
        """Send this collector's tasks to `backend` (see `afterward.Backend`).

        Raises:
            TypeError: `backend` is not a `Backend`, or refuses a task already added.
        """
        check_backend(backend)
        for task in self.tasks:
            if not isinstance(task, BackgroundTask):
                raise TypeError(
                    f"{task!r} cannot be sent to {type(backend).__name__}: a backend only "
                    f"takes afterward tasks. Add it with add_task(func, *args, **kwargs)."
                )
            backend.validate(task)
        self.backend = backend

    @property
    def pending(self) -> list[_StarletteTask]:
        """The tasks that have not been started yet."""
        return self.tasks[self._next :]

    def next_pending(self) -> _StarletteTask | None:
        """Return the first task not started yet, without starting it; None if there is none."""
        return self.tasks[self._next] if self._next < len(self.tasks) else None

    def take_next(self) -> _StarletteTask | None:
        """Mark the first task not started yet as started and return it; None if there is none.

        The runner takes each task this way just before it runs it.
        """
        index = self._next
        if index < len(self.tasks):
            self._next = index + 1
            return self.tasks[index]
        return None

    def has_pending(self) -> bool:
        """Return whether some task has not been started yet."""
        return self._next < len(self.tasks)

    def skip_pending(self, *, keep_always: bool = False) -> list[_StarletteTask]:
        """Mark the tasks not started yet as done, without running them, and return them.

        Used where a run ends early (a failed request, `stop_on_error`, cancellation): the caller
        logs the returned tasks by name, and running the collector again will not start them.
        Their handles get the status `"abandoned"`.

        Args:
            keep_always: Leave the tasks whose policy says `always=True` pending, in order (a
                failed request still runs those).
        """
        pending = self.tasks[self._next :]
        if keep_always:
            kept = [task for task in pending if _is_always(task)]
            if kept:
                pending = [task for task in pending if not _is_always(task)]
                self.tasks[self._next :] = kept
                abandon(pending)
                return pending
        self._next = len(self.tasks)
        abandon(pending)
        return pending

    def started_before(self, skipped: int) -> _StarletteTask | None:
        """Return the task started last, before the `skipped` ones `skip_pending` returned."""
        index = len(self.tasks) - skipped - 1
        return self.tasks[index] if index >= 0 else None

    async def __call__(self) -> None:
        """Run the tasks that have not run yet, in order.

        A collector is run by one run at a time: called while a run of it is in progress (a
        response cached with it as `background` and sent to two clients at once), this returns
        at once, and the run in progress runs every task not started yet, those included. Each
        task still runs exactly once.
        """
        if self._running:
            return
        if self.backend is not None:
            await enqueue_entries(self.backend, take_pending(self))
            return
        self._running = True
        try:
            await run_tasks(self)
        finally:
            self._running = False


class _SealedTasks(list[Any]):
    """The task list of a request's collector whose run has ended: adding to it is an error."""

    def _refuse(self, *args: object) -> None:
        raise RuntimeError(
            "This request's background tasks have already run (or were dropped with the "
            "request), so a task added now would never run. Add tasks while the request is "
            "being handled, or from one of its tasks while they run; for work that starts "
            "later, use a collector of its own."
        )

    append = insert = extend = __iadd__ = _refuse  # type: ignore[assignment]


def new_collector() -> BackgroundTasks:
    """Return `BackgroundTasks()`, made without calling `__init__`: what a request makes.

    With no argument, `__init__` only sets `tasks` (every other default is a class attribute,
    which a subclass may override); skipping its call and checks saves ~0.2 µs of each request
    that queues a task. The defaults that each `add_task` or run reads are written here on the
    instance: reading a class's default through an instance misses CPython 3.11's specialised
    attribute lookup (~160 instructions each, callgrind; ~2,000 in a request of ten tasks).
    """
    collector: BackgroundTasks = _new(BackgroundTasks)
    collector.tasks = []
    collector._next = 0
    collector.backend = None
    collector.concurrency = 1
    collector.limiter = None
    return collector


_new = object.__new__


def seal(collector: BackgroundTasks) -> None:
    """The run of a request's collector has ended: refuse what is added to it from now on.

    Whoever runs a request's collector after the response (the supervisor, `inject`, the
    FastAPI drop-in) calls this when nothing will run it again, so a late `add_task` (on a
    collector kept past its request) is an error instead of a task accepted and never run. A
    collector a user makes and awaits by hand is never sealed: awaiting it again runs what was
    added since.
    """
    if type(collector.tasks) is not _SealedTasks:
        collector.tasks = _SealedTasks(collector.tasks)


def unseal(collector: BackgroundTasks) -> bool:
    """Let a sealed collector take tasks again; return whether it was sealed.

    For what runs a request's collector once more: a FastAPI factory override shared by
    requests, a test's recorder replaying it (`afterward.testing.record_tasks`).
    """
    if type(collector.tasks) is _SealedTasks:
        collector.tasks = list(collector.tasks)
        return True
    return False


def _is_always(task: object) -> bool:
    policy = getattr(task, "policy", None)
    return policy is not None and bool(getattr(policy, "always", False))
