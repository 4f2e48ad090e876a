"""`record_tasks()`: collectors record their tasks instead of running them, for tests to inspect.

The recorder is shaped as a backend (`validate`, `enqueue`), where tasks go instead of afterward's
in-process runner; `afterward._recording` is the switch that sends them to it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from starlette.background import BackgroundTask as _StarletteTask
from starlette.background import BackgroundTasks as _StarletteTasks

from .. import _recording
from .._backend import Backend
from .._callables import task_name
from .._policy import Task, TaskPolicy
from .._report import entry_name
from .._tasks import BackgroundTasks, seal, unseal
from ._sync import AsyncBackend, PortalSource, run_sync

__all__ = ["RecordedTask", "RecordingBackend", "record_tasks"]


class RecordedTask:
    """One task that a collector recorded instead of running.

    Attributes:
        func: The function the task calls (for a `@task` function, the plain function).
        args: Its positional arguments.
        kwargs: Its keyword arguments.
        name: Its name, as afterward logs it (`module.qualname`, or the policy's `name`).
        policy: The `afterward.TaskPolicy` it carries, or None for a plain function.
        entry: The entry itself: the `afterward.BackgroundTask` that `add_task` returned (its
            handle), or whatever else the collector held (a Starlette `BackgroundTask`).
        ran: Whether `run()` has run it.
    """

    __slots__ = ("_source", "args", "entry", "func", "kwargs", "name", "policy", "ran")

    def __init__(self, entry: object, source: BackgroundTasks) -> None:
        self.entry = entry
        self.func: Callable[..., Any] = getattr(entry, "func", cast(Any, entry))
        self.args: tuple[Any, ...] = tuple(getattr(entry, "args", ()))
        self.kwargs: dict[str, Any] = dict(getattr(entry, "kwargs", {}))
        self.name = entry_name(entry)
        policy = getattr(entry, "policy", None)
        self.policy = policy if isinstance(policy, TaskPolicy) else None
        self.ran = False
        self._source = source

    def __repr__(self) -> str:
        return f"<RecordedTask {self.call_repr()}>"

    def call_repr(self) -> str:
        """Return the call as code would read: `module.send_email('ada@example.com', lang='fr')`."""
        arguments = [repr(arg) for arg in self.args]
        arguments += [f"{key}={value!r}" for key, value in self.kwargs.items()]
        return f"{self.name}({', '.join(arguments)})"

    def calls(self, func: object) -> bool:
        """Return whether this task calls `func`: a function, a `@task` function, or a name."""
        if isinstance(func, str):
            return self.name == func
        wanted = func.func if isinstance(func, Task) else func
        return self.func is wanted or self.func == wanted

    def matches(self, func: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Return whether this task calls `func` with exactly `args` and `kwargs`.

        The expected values are compared first, so `unittest.mock.ANY` matches anything.
        """
        return self.calls(func) and args == self.args and kwargs == self.kwargs


class RecordingBackend(Backend):
    """Where tasks go while `record_tasks()` is active: recorded, in order, not run.

    Every collector that would run its tasks (inline, or handed to the middleware's supervisor)
    gives them here instead, and they are marked done in that collector. `run()` runs them later,
    on demand, as afterward would have: in order, each in the context captured by `add_task`,
    with its policy, a failure logged without stopping the next one.

    It is safe to use from several threads (TestClient serves requests in a thread of its own).

    It is an `afterward.Backend`, so it can also be installed for one app or one collector
    instead of process-wide: `BackgroundTasksMiddleware(app, backend=RecordingBackend())` or
    `BackgroundTasks(backend=RecordingBackend())`. It accepts every task (async ones, retries),
    and records a request's tasks when its response starts (`handoff="before_response"`).
    """

    supports_async = True
    supports_retries = True
    handoff = "before_response"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: list[RecordedTask] = []

    def __repr__(self) -> str:
        return f"<RecordingBackend [{', '.join(task.call_repr() for task in self.calls)}]>"

    def __len__(self) -> int:
        with self._lock:
            return len(self._tasks)

    def __iter__(self) -> Iterator[RecordedTask]:
        return iter(self.calls)

    # -- what was recorded ----------------------------------------------------------------------

    @property
    def calls(self) -> list[RecordedTask]:
        """Every task recorded so far, in the order it would have run."""
        with self._lock:
            return list(self._tasks)

    @property
    def names(self) -> list[str]:
        """The names of the tasks recorded so far, in order."""
        return [task.name for task in self.calls]

    @property
    def pending(self) -> list[RecordedTask]:
        """The tasks recorded and not run yet (by `run()`), in order."""
        return [task for task in self.calls if not task.ran]

    def calls_to(self, func: object) -> list[RecordedTask]:
        """Return the recorded tasks that call `func`, whatever their arguments.

        Args:
            func: The function, the `@task` function, or the task's name.
        """
        return [task for task in self.calls if task.calls(func)]

    def clear(self) -> None:
        """Forget every task recorded so far (they will not be run)."""
        with self._lock:
            self._tasks.clear()

    # -- assertions -----------------------------------------------------------------------------

    def assert_called(self, func: object, /, *args: Any, **kwargs: Any) -> RecordedTask:
        """Assert that some recorded task calls `func(*args, **kwargs)`; return the first one.

        The arguments must be exactly these (`unittest.mock.ANY` stands for any one value); to
        check only the function, use `calls_to(func)`.

        Raises:
            AssertionError: no recorded task matches; the message lists what was recorded.
        """
        for task in self.calls:
            if task.matches(func, args, kwargs):
                return task
        raise AssertionError(
            f"No task {_call_text(func, args, kwargs)} was recorded. {self._recorded_text()}"
        )

    def assert_called_once(self, func: object, /, *args: Any, **kwargs: Any) -> RecordedTask:
        """Assert that exactly one recorded task calls `func`, and with these arguments.

        Raises:
            AssertionError: `func` was recorded no time, several times, or with other arguments.
        """
        found = self.calls_to(func)
        if len(found) != 1:
            raise AssertionError(
                f"Expected one task calling {_func_text(func)}, found {len(found)}. "
                f"{self._recorded_text()}"
            )
        if not found[0].matches(func, args, kwargs):
            raise AssertionError(
                f"Expected {_call_text(func, args, kwargs)}, recorded {found[0].call_repr()}."
            )
        return found[0]

    def assert_not_called(self, func: object = None, /) -> None:
        """Assert that no recorded task calls `func`; without `func`, that nothing was recorded.

        Raises:
            AssertionError: such a task was recorded; the message lists them.
        """
        found = self.calls if func is None else self.calls_to(func)
        if found:
            what = "No task" if func is None else f"No task calling {_func_text(func)}"
            listed = ", ".join(task.call_repr() for task in found)
            raise AssertionError(f"{what} was expected, but recorded: {listed}.")

    def _recorded_text(self) -> str:
        calls = self.calls
        if not calls:
            return "Nothing was recorded."
        return f"Recorded: {', '.join(task.call_repr() for task in calls)}."

    # -- running them ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the recorded tasks not run yet, in order, as afterward would have run them.

        Each collector's tasks run together with that collector's options (`stop_on_error`,
        `on_error`, `limiter`, `concurrency`); each task in the context captured by `add_task`,
        with its policy; a failure is logged and the next task runs. Tasks that the running
        tasks queue are recorded and run too, before this returns. They run here, in the
        caller's event loop, not in the middleware's supervisor.
        """
        while True:
            batch = self._take_batch()
            if not batch:
                return
            source = batch[0]._source
            replay = _Replay([cast(_StarletteTask, task.entry) for task in batch])
            for option, value in vars(source).items():
                if option in _OPTIONS:  # set on the instance: differs from the class default
                    setattr(replay, option, value)
            # The request's run of `source` ended (it recorded instead of running): this replay
            # is its run, so its tasks may queue more on it meanwhile.
            sealed = unseal(source)
            try:
                await replay()
                if source.has_pending():
                    # Queued by one of its tasks (`current_tasks()` in a task finds this
                    # collector): it would have run in the same run.
                    self.record_collector(source)
            finally:
                if sealed:
                    seal(source)

    def run_sync(self, portal: PortalSource = None, *, backend: AsyncBackend = "asyncio") -> None:
        """Run the recorded tasks not run yet (see `run()`), from synchronous code.

        Args:
            portal: Where to run them: a `TestClient` inside its `with` block (on the app's
                event loop, so the tasks may use what the app's lifespan set up), or an AnyIO
                `BlockingPortal`. By default, in a new event loop of `backend`.
            backend: The AnyIO backend of that new event loop: `"asyncio"` or `"trio"`.

        Raises:
            RuntimeError: called inside a running event loop (use `await recorded.run()`), or
                given a TestClient outside its `with` block.
        """
        run_sync(self.run, portal, backend, what="recorded.run_sync()")

    def _take_batch(self) -> list[RecordedTask]:
        """Mark the next pending tasks of one collector as run, and return them."""
        with self._lock:
            batch: list[RecordedTask] = []
            for task in self._tasks:
                if task.ran:
                    continue
                if batch and task._source is not batch[0]._source:
                    break
                task.ran = True
                batch.append(task)
            return batch

    # -- the backend's side ---------------------------------------------------------------------

    def validate(self, task: object) -> None:
        """Accept any task: a recorder takes whatever a collector would run."""

    async def enqueue(self, tasks: Sequence[object]) -> None:
        """Record `tasks` (a backend's hand-off), in order."""
        self.record_collector(BackgroundTasks([cast(_StarletteTask, task) for task in tasks]))

    def record_collector(self, collector: BackgroundTasks) -> None:
        """Record the collector's pending tasks, in order, and mark them done in it."""
        recorded: list[RecordedTask] = []
        _flatten(collector, recorded)
        with self._lock:
            self._tasks.extend(recorded)

    def record_task(self, entry: object) -> None:
        """Record one task run on its own (a response's `background=`)."""
        recorded = RecordedTask(entry, BackgroundTasks())
        with self._lock:
            self._tasks.append(recorded)


# The options of `BackgroundTasks(...)` that a replay keeps from the collector it replays.
_OPTIONS = frozenset({"stop_on_error", "on_error", "limiter", "concurrency"})


class _Replay(BackgroundTasks):
    """The collector `run()` runs recorded tasks in: never intercepted by the recording switch."""

    _afterward_replay = True


def _flatten(collector: BackgroundTasks, into: list[RecordedTask]) -> None:
    # A collector may hold collectors (`attach` merges a response's own background with the
    # request's collector): record their tasks one by one, each with the collector it came from.
    # Taken as the runner takes them, not skipped: skipping would mark the handles abandoned.
    while (entry := collector.take_next()) is not None:
        if isinstance(entry, BackgroundTasks):
            _flatten(entry, into)
        elif isinstance(entry, _StarletteTasks):
            _flatten(BackgroundTasks(list(entry.tasks)), into)
        else:
            into.append(RecordedTask(entry, collector))


def _func_text(func: object) -> str:
    if isinstance(func, str):
        return func
    return func.name if isinstance(func, Task) else task_name(func)


def _call_text(func: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    arguments = [repr(arg) for arg in args] + [f"{key}={value!r}" for key, value in kwargs.items()]
    return f"{_func_text(func)}({', '.join(arguments)})"


@contextmanager
def record_tasks() -> Iterator[RecordingBackend]:
    """Record every collector's tasks instead of running them, inside the `with` block.

    Recording is process-wide, for every app and every thread (Starlette's `TestClient` serves
    requests in a thread of its own): `BackgroundTasks.__call__`, the FastAPI drop-in, `inject`
    endpoints, `attach`, and `BackgroundTasksMiddleware`'s detached hand-off all record. Nested
    blocks: the innermost records. When the block ends, collectors run their tasks again; the
    recorder keeps what it recorded, and `run()` still runs it.

    Yields:
        The `RecordingBackend` holding the recorded tasks.
    """
    recorder = RecordingBackend()
    _recording.start(recorder)
    try:
        yield recorder
    finally:
        _recording.stop(recorder)
