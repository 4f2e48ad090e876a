"""How a collector's tasks are executed after the response (`afterward._runner`)."""

from __future__ import annotations

import contextvars
import gc
import logging
import threading
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask as StarletteTask
from starlette.background import BackgroundTasks as StarletteTasks
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import afterward
import afterward._hop
from afterward import BackgroundTask, BackgroundTasks
from helpers import wait_until_a_task_waits_for

pytestmark = pytest.mark.anyio

HERE = __name__  # the module name tasks defined here are logged under

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


class TaskFailedError(Exception):
    """What the failing tasks in these tests raise."""


class Interrupt(BaseException):
    """A BaseException that is not cancellation, like KeyboardInterrupt or SystemExit."""


class Record:
    """A thread-safe log of what the tasks did, in order."""

    def __init__(self) -> None:
        self.events: list[object] = []
        self.threads: list[int] = []

    def __call__(self, event: object) -> None:
        self.threads.append(threading.get_ident())
        self.events.append(event)

    async def async_(self, event: object) -> None:
        self(event)


def fail(message: str = "boom") -> None:
    raise TaskFailedError(message)


async def fail_async(message: str = "boom") -> None:
    raise TaskFailedError(message)


@pytest.fixture
def record() -> Record:
    return Record()


@pytest.fixture
def thread_hops(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Count thread hops (`afterward._hop.run_sync`); each item is the limiter it was given.

    On asyncio the limiter is passed through a view that skips an extra event-loop turn
    (`afterward._anyio_seam.prompt_limiter`); the item is then the limiter it stands for.
    """
    calls: list[Any] = []
    real_run_sync = afterward._hop.run_sync

    async def counting_run_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        limiter = kwargs.get("limiter")
        calls.append(getattr(limiter, "limiter", limiter))
        return await real_run_sync(func, *args, **kwargs)

    monkeypatch.setattr(afterward._hop, "run_sync", counting_run_sync)
    return calls


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "afterward" and r.levelno == logging.ERROR]


def warning_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "afterward" and r.levelno == logging.WARNING]


# --- order and threads --------------------------------------------------------------------------


async def test_tasks_run_in_the_order_they_were_added_sync_and_async_mixed(record: Record) -> None:
    tasks = BackgroundTasks()
    tasks.add_task(record, 1)
    tasks.add_task(record.async_, 2)
    tasks.add_task(record, 3)
    tasks.add_task(record, 4)
    tasks.add_task(record.async_, 5)
    tasks.add_task(record.async_, 6)
    tasks.add_task(record, 7)
    await tasks()
    assert record.events == [1, 2, 3, 4, 5, 6, 7]


async def test_sync_tasks_run_in_a_worker_thread_and_async_tasks_on_the_loop_thread(
    record: Record,
) -> None:
    loop_thread = threading.get_ident()
    tasks = BackgroundTasks()
    tasks.add_task(record, "sync")
    tasks.add_task(record.async_, "async")
    await tasks()
    sync_thread, async_thread = record.threads
    assert sync_thread != loop_thread
    assert async_thread == loop_thread


async def test_consecutive_sync_tasks_run_in_one_thread_hop(
    record: Record, thread_hops: list[Any]
) -> None:
    tasks = BackgroundTasks()
    for index in range(10):
        tasks.add_task(record, index)
    await tasks()
    assert record.events == list(range(10))
    assert len(thread_hops) == 1
    assert len(set(record.threads)) == 1
    assert record.threads[0] != threading.get_ident()


async def test_each_run_of_sync_tasks_between_async_tasks_is_one_thread_hop(
    record: Record, thread_hops: list[Any]
) -> None:
    tasks = BackgroundTasks()
    tasks.add_task(record, "sync 1")
    tasks.add_task(record.async_, "async")
    tasks.add_task(record, "sync 2")
    await tasks()
    assert record.events == ["sync 1", "async", "sync 2"]
    assert len(thread_hops) == 2

    thread_hops.clear()
    tasks = BackgroundTasks()
    for kind in "ssassaas":
        tasks.add_task(record if kind == "s" else record.async_, kind)
    await tasks()
    assert len(thread_hops) == 3  # ss, ss, s


async def test_only_async_tasks_need_no_thread(record: Record, thread_hops: list[Any]) -> None:
    tasks = BackgroundTasks()
    for index in range(3):
        tasks.add_task(record.async_, index)
    await tasks()
    assert record.events == [0, 1, 2]
    assert thread_hops == []


async def test_empty_collector_runs_nothing(thread_hops: list[Any]) -> None:
    tasks = BackgroundTasks()
    await tasks()
    assert thread_hops == []
    assert tasks.pending == []


# --- the thread limiter -------------------------------------------------------------------------


async def test_sync_tasks_use_afterwards_default_limiter_not_anyios(
    thread_hops: list[Any],
) -> None:
    borrowed: list[tuple[float, float]] = []
    ours = afterward.current_default_thread_limiter()
    anyios = anyio.to_thread.current_default_thread_limiter()

    def measure() -> None:
        borrowed.append(
            anyio.from_thread.run_sync(lambda: (ours.borrowed_tokens, anyios.borrowed_tokens))
        )

    tasks = BackgroundTasks()
    tasks.add_task(measure)
    await tasks()
    assert thread_hops == [ours]
    assert ours is not anyios
    assert borrowed == [(1, 0)]


async def test_sync_tasks_use_the_limiter_given_to_the_collector(thread_hops: list[Any]) -> None:
    limiter = anyio.CapacityLimiter(1)
    borrowed: list[float] = []

    def measure() -> None:
        borrowed.append(anyio.from_thread.run_sync(lambda: limiter.borrowed_tokens))

    tasks = BackgroundTasks(limiter=limiter)
    tasks.add_task(measure)
    tasks.add_task(measure)
    await tasks()
    assert thread_hops == [limiter]
    assert borrowed == [1, 1]
    assert afterward.current_default_thread_limiter().borrowed_tokens == 0


async def test_sync_tasks_wait_for_a_free_thread_on_their_limiter(record: Record) -> None:
    limiter = anyio.CapacityLimiter(1)
    tasks = BackgroundTasks(limiter=limiter)
    tasks.add_task(record, "ran")
    done = anyio.Event()

    async def run() -> None:
        await tasks()
        done.set()

    async with anyio.create_task_group() as tg:
        await limiter.acquire()  # every thread of this limiter is busy
        tg.start_soon(run)
        await wait_until_a_task_waits_for(limiter)
        assert record.events == []
        limiter.release()
        with anyio.fail_after(5):
            await done.wait()
    assert record.events == ["ran"]


# --- failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize("failing", [fail, fail_async], ids=["sync", "async"])
async def test_failing_task_is_logged_with_name_and_traceback_and_the_next_one_runs(
    failing: Callable[[str], Any], record: Record, caplog: pytest.LogCaptureFixture
) -> None:
    tasks = BackgroundTasks()
    tasks.add_task(record, "before")
    tasks.add_task(failing, "first failure")
    tasks.add_task(record, "after sync")
    tasks.add_task(record.async_, "after async")
    await tasks()
    assert record.events == ["before", "after sync", "after async"]
    (logged,) = error_records(caplog)
    name = f"{HERE}.{failing.__qualname__}"
    assert name in logged.getMessage()
    assert "remaining tasks still run" in logged.getMessage()
    assert logged.afterward_task == name  # type: ignore[attr-defined]
    assert logged.exc_info is not None
    exc_type, exc, traceback = logged.exc_info
    assert exc_type is TaskFailedError
    assert str(exc) == "first failure"
    assert traceback is not None
    assert "raise TaskFailedError(message)" in caplog.text  # the task's own frame is shown


async def test_every_failing_task_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks()
    tasks.add_task(fail, "one")
    tasks.add_task(fail, "two")
    tasks.add_task(fail_async, "three")
    await tasks()
    assert [str(r.exc_info[1]) for r in error_records(caplog) if r.exc_info] == [
        "one",
        "two",
        "three",
    ]


def sync_on_error(calls: list[object]) -> Callable[[StarletteTask, Exception], None]:
    def on_error(task: StarletteTask, exc: Exception) -> None:
        calls.append(("on_error", task, exc))

    return on_error


def async_on_error(calls: list[object]) -> Callable[[StarletteTask, Exception], Awaitable[None]]:
    async def on_error(task: StarletteTask, exc: Exception) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(("on_error", task, exc))

    return on_error


@pytest.mark.parametrize("make_on_error", [sync_on_error, async_on_error], ids=["sync", "async"])
@pytest.mark.parametrize("failing", [fail, fail_async], ids=["sync-task", "async-task"])
async def test_on_error_gets_the_task_and_exception_before_the_next_task_runs(
    make_on_error: Callable[[list[object]], afterward.ErrorCallback],
    failing: Callable[[], Any],
) -> None:
    calls: list[Any] = []
    tasks = BackgroundTasks(on_error=make_on_error(calls))
    tasks.add_task(failing)
    tasks.add_task(calls.append, "next sync")
    tasks.add_task(Record().async_, "next async")
    await tasks()
    assert len(calls) == 2
    kind, task, exc = calls[0]
    assert kind == "on_error"
    assert task is tasks.tasks[0]
    assert isinstance(exc, TaskFailedError)
    assert calls[1] == "next sync"


async def test_on_error_that_raises_is_logged_and_the_run_continues(
    record: Record, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_on_error(task: StarletteTask, exc: Exception) -> None:
        raise RuntimeError("on_error is broken")

    tasks = BackgroundTasks(on_error=broken_on_error)
    tasks.add_task(fail)
    tasks.add_task(record, "still runs")
    await tasks()
    assert record.events == ["still runs"]
    task_failure, callback_failure = error_records(caplog)
    assert f"{HERE}.fail" in task_failure.getMessage()
    assert "on_error callback failed" in callback_failure.getMessage()
    assert f"{HERE}.fail" in callback_failure.getMessage()
    assert callback_failure.exc_info is not None
    assert str(callback_failure.exc_info[1]) == "on_error is broken"


async def test_async_on_error_that_raises_is_logged_and_the_run_continues(
    record: Record, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken_on_error(task: StarletteTask, exc: Exception) -> None:
        raise RuntimeError("on_error is broken")

    tasks = BackgroundTasks(on_error=broken_on_error)
    tasks.add_task(fail_async)
    tasks.add_task(record.async_, "still runs")
    await tasks()
    assert record.events == ["still runs"]
    assert "on_error callback failed" in error_records(caplog)[1].getMessage()


async def test_on_error_is_not_called_when_nothing_fails(record: Record) -> None:
    calls: list[object] = []
    tasks = BackgroundTasks(on_error=sync_on_error(calls))
    tasks.add_task(record, 1)
    tasks.add_task(record.async_, 2)
    await tasks()
    assert calls == []


@pytest.mark.parametrize("failing", [fail, fail_async], ids=["sync", "async"])
async def test_stop_on_error_stops_and_logs_the_skipped_tasks_by_name_without_raising(
    failing: Callable[[], Any], record: Record, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[object] = []
    tasks = BackgroundTasks(stop_on_error=True, on_error=sync_on_error(calls))
    tasks.add_task(record, "before")
    tasks.add_task(failing)
    tasks.add_task(record, "skipped sync")
    tasks.add_task(record.async_, "skipped async")
    await tasks()  # raises nothing
    assert record.events == ["before"]
    assert len(calls) == 1
    failure, skipping = error_records(caplog)
    assert failure.exc_info is not None
    message = skipping.getMessage()
    assert "Skipping 2 background task(s)" in message
    assert f"because {HERE}.{failing.__qualname__} failed" in message
    assert f"{HERE}.Record, {HERE}.Record.async_" in message
    assert tasks.pending == []
    await tasks()  # the skipped tasks are not run later either
    assert record.events == ["before"]


async def test_stop_on_error_on_the_last_task_skips_nothing(
    record: Record, caplog: pytest.LogCaptureFixture
) -> None:
    tasks = BackgroundTasks(stop_on_error=True)
    tasks.add_task(record, "before")
    tasks.add_task(fail)
    await tasks()
    assert record.events == ["before"]
    assert [r.getMessage() for r in error_records(caplog) if "Skipping" in r.getMessage()] == []


async def test_failure_in_the_middle_of_a_sync_run_resumes_with_the_next_sync_task(
    record: Record, thread_hops: list[Any]
) -> None:
    tasks = BackgroundTasks()
    tasks.add_task(record, 1)
    tasks.add_task(fail)
    tasks.add_task(record, 2)
    tasks.add_task(record, 3)
    await tasks()
    assert record.events == [1, 2, 3]
    assert len(thread_hops) == 2  # the failure is reported on the loop between the two hops


# --- each entry once, tasks added while running --------------------------------------------------


async def test_each_task_runs_at_most_once(record: Record) -> None:
    tasks = BackgroundTasks()
    tasks.add_task(record, "sync")
    tasks.add_task(record.async_, "async")
    await tasks()
    await tasks()
    assert record.events == ["sync", "async"]


async def test_running_again_runs_only_the_tasks_added_since(record: Record) -> None:
    tasks = BackgroundTasks()
    tasks.add_task(record, 1)
    await tasks()
    tasks.add_task(record.async_, 2)
    tasks.add_task(record, 3)
    assert len(tasks.pending) == 2
    await tasks()
    assert record.events == [1, 2, 3]
    assert tasks.pending == []


async def test_failed_task_is_not_retried_by_a_second_run(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks()
    tasks.add_task(fail)
    await tasks()
    await tasks()
    assert len(error_records(caplog)) == 1


async def test_tasks_added_by_a_running_sync_task_run_in_the_same_run(record: Record) -> None:
    tasks = BackgroundTasks()

    def add_more() -> None:
        record("adder")
        tasks.add_task(record, "added sync")
        tasks.add_task(record.async_, "added async")

    tasks.add_task(add_more)
    tasks.add_task(record, "already there")
    await tasks()
    assert record.events == ["adder", "already there", "added sync", "added async"]


async def test_tasks_added_by_a_running_async_task_run_in_the_same_run(record: Record) -> None:
    tasks = BackgroundTasks()

    async def add_more() -> None:
        tasks.add_task(record, "added sync")
        tasks.add_task(add_more_again)

    async def add_more_again() -> None:
        tasks.add_task(record.async_, "added by an added task")

    tasks.add_task(add_more)
    await tasks()
    assert record.events == ["added sync", "added by an added task"]


# --- contextvars --------------------------------------------------------------------------------


def read_request_id(seen: list[str]) -> None:
    seen.append(request_id.get())


async def read_request_id_async(seen: list[str]) -> None:
    await anyio.lowlevel.checkpoint()  # the value must survive a trip through the event loop
    seen.append(request_id.get())


async def test_tasks_see_the_context_captured_when_they_were_added() -> None:
    seen: list[str] = []
    tasks = BackgroundTasks()
    token = request_id.set("first")
    tasks.add_task(read_request_id, seen)
    tasks.add_task(read_request_id_async, seen)
    request_id.set("second")
    tasks.add_task(read_request_id, seen)
    tasks.add_task(read_request_id_async, seen)
    request_id.set("changed after add_task")
    try:
        await tasks()
    finally:
        request_id.reset(token)
    assert seen == ["first", "first", "second", "second"]


async def test_context_captured_in_a_worker_thread_is_seen_by_the_tasks() -> None:
    """What a sync endpoint or dependency sets (in AnyIO's thread pool) reaches the tasks."""
    seen: list[str] = []
    tasks = BackgroundTasks()

    def sync_endpoint() -> None:
        request_id.set("set in a sync endpoint")
        tasks.add_task(read_request_id, seen)
        tasks.add_task(read_request_id_async, seen)
        request_id.set("changed afterwards")

    await anyio.to_thread.run_sync(sync_endpoint)
    assert request_id.get() == "unset"  # the thread's change did not come back to the loop
    await tasks()
    assert seen == ["set in a sync endpoint", "set in a sync endpoint"]


async def test_changes_a_task_makes_to_its_context_are_not_seen_by_the_next_task() -> None:
    """The next task runs with the values captured at its add_task.

    (An async task whose captured context was still the running one runs in it, as Starlette's do,
    so its changes may stay visible to the code that runs after the collector: `request_id` is not
    asserted here.)
    """
    seen: list[str] = []

    def overwrite() -> None:
        request_id.set("overwritten by a sync task")

    async def overwrite_async() -> None:
        request_id.set("overwritten by an async task")

    tasks = BackgroundTasks()
    tasks.add_task(overwrite)
    tasks.add_task(read_request_id, seen)
    tasks.add_task(overwrite_async)
    tasks.add_task(read_request_id_async, seen)
    await tasks()
    assert seen == ["unset", "unset"]


async def test_a_sync_tasks_changes_to_its_context_never_reach_the_caller() -> None:
    def overwrite() -> None:
        request_id.set("overwritten by a sync task")

    tasks = BackgroundTasks()
    tasks.add_task(overwrite)
    await tasks()
    assert request_id.get() == "unset"


async def test_an_async_task_added_before_a_change_runs_with_the_value_it_captured() -> None:
    seen: list[str] = []
    tasks = BackgroundTasks()
    tasks.add_task(read_request_id_async, seen)
    token = request_id.set("changed after add_task")
    try:
        await tasks()
    finally:
        request_id.reset(token)
    assert seen == ["unset"]


async def test_async_task_can_use_task_groups_threads_and_timeouts_in_its_context() -> None:
    seen: list[str] = []

    async def busy() -> None:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_request_id_async, seen)
            await anyio.to_thread.run_sync(read_request_id, seen)
            seen.append(request_id.get())

    token = request_id.set("captured")
    tasks = BackgroundTasks()
    tasks.add_task(busy)
    request_id.reset(token)
    await tasks()
    assert seen == ["captured", "captured", "captured"]


# --- sync functions that return awaitables ------------------------------------------------------


async def test_sync_function_returning_a_coroutine_gets_it_awaited_on_the_loop(
    record: Record,
) -> None:
    loop_thread = threading.get_ident()

    async def deliver(value: str) -> None:
        record(value)

    def sync_wrapper(value: str) -> Awaitable[None]:
        record("wrapper")
        return deliver(value)

    tasks = BackgroundTasks()
    tasks.add_task(sync_wrapper, "delivered")
    tasks.add_task(record, "next")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await tasks()
        gc.collect()
    assert caught == []
    assert record.events == ["wrapper", "delivered", "next"]
    wrapper_thread, delivered_thread, _ = record.threads
    assert wrapper_thread != loop_thread
    assert delivered_thread == loop_thread


async def test_coroutine_returned_by_a_sync_task_runs_in_the_tasks_context() -> None:
    seen: list[str] = []

    def sync_wrapper() -> Awaitable[None]:
        return read_request_id_async(seen)

    token = request_id.set("captured")
    tasks = BackgroundTasks()
    tasks.add_task(sync_wrapper)
    request_id.reset(token)
    await tasks()
    assert seen == ["captured"]


async def test_failure_of_a_coroutine_returned_by_a_sync_task_is_logged_under_the_task_name(
    record: Record, caplog: pytest.LogCaptureFixture
) -> None:
    def sync_wrapper() -> Awaitable[None]:
        return fail_async("from the coroutine")

    tasks = BackgroundTasks()
    tasks.add_task(sync_wrapper)
    tasks.add_task(record, "next")
    await tasks()
    assert record.events == ["next"]
    (logged,) = error_records(caplog)
    assert "sync_wrapper" in logged.getMessage()
    assert logged.exc_info is not None
    assert str(logged.exc_info[1]) == "from the coroutine"


async def test_sync_task_returning_a_plain_value_is_not_awaited(record: Record) -> None:
    def returns_a_value() -> int:
        record("ran")
        return 42

    tasks = BackgroundTasks()
    tasks.add_task(returns_a_value)
    await tasks()
    assert record.events == ["ran"]


# --- cancellation and interruption --------------------------------------------------------------


async def test_cancelling_while_an_async_task_runs_reraises_and_logs_the_tasks_by_name(
    record: Record, caplog: pytest.LogCaptureFixture
) -> None:
    started = anyio.Event()
    reraised: list[bool] = []

    async def slow() -> None:
        started.set()
        await anyio.sleep_forever()

    tasks = BackgroundTasks()
    tasks.add_task(record, "first")
    tasks.add_task(slow)
    tasks.add_task(record, "never sync")
    tasks.add_task(record.async_, "never async")

    async def run() -> None:
        try:
            await tasks()
        except anyio.get_cancelled_exc_class():
            reraised.append(True)
            raise

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await started.wait()
            tg.cancel_scope.cancel()
    assert reraised == [True]
    assert record.events == ["first"]
    (logged,) = warning_records(caplog)
    message = logged.getMessage()
    assert f"{HERE}.test_cancelling_while_an_async_task_runs" in message
    assert ".<locals>.slow was interrupted" in message
    assert f"2 task(s) never started: {HERE}.Record, {HERE}.Record.async_" in message
    assert tasks.pending == []  # a later run does not resurrect them


async def test_cancelling_during_a_run_of_sync_tasks_stops_it_between_tasks(
    record: Record, caplog: pytest.LogCaptureFixture
) -> None:
    started = anyio.Event()
    release = threading.Event()
    reraised: list[bool] = []

    def blocking() -> None:
        anyio.from_thread.run_sync(started.set)
        release.wait(5)
        record("blocking finished")

    def second() -> None:
        record("second")

    tasks = BackgroundTasks()
    tasks.add_task(blocking)
    tasks.add_task(second)
    tasks.add_task(record, "third")

    async def run() -> None:
        try:
            await tasks()
        except anyio.get_cancelled_exc_class():
            reraised.append(True)
            raise

    class Release(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            release.set()  # named as the cancellation arrives: now let the thread return

    handler = Release(logging.WARNING)
    logging.getLogger("afterward").addHandler(handler)
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await started.wait()
                tg.cancel_scope.cancel()
    finally:
        logging.getLogger("afterward").removeHandler(handler)
        release.set()
    assert reraised == [True]
    # A thread cannot be interrupted: the running task finished, and the run stopped after it.
    assert record.events == ["blocking finished"]
    (logged,) = warning_records(caplog)
    message = logged.getMessage()
    assert f"{HERE}.{blocking.__qualname__} is still running in its worker thread" in message
    assert f"2 task(s) never started: {HERE}.{second.__qualname__}, {HERE}.Record" in message


async def test_cancelling_while_waiting_for_a_thread_logs_every_task_as_never_started(
    record: Record, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = anyio.CapacityLimiter(1)
    tasks = BackgroundTasks(limiter=limiter)
    tasks.add_task(record, 1)
    tasks.add_task(record.async_, 2)
    await limiter.acquire()
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(tasks)
                await wait_until_a_task_waits_for(limiter)
                tg.cancel_scope.cancel()
    finally:
        limiter.release()
    assert record.events == []
    (logged,) = warning_records(caplog)
    assert "2 task(s) never started" in logged.getMessage()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_base_exception_from_a_task_propagates_after_naming_it(
    kind: str, record: Record, caplog: pytest.LogCaptureFixture
) -> None:
    def interrupt() -> None:
        raise Interrupt

    async def interrupt_async() -> None:
        raise Interrupt

    tasks = BackgroundTasks()
    tasks.add_task(interrupt if kind == "sync" else interrupt_async)
    tasks.add_task(record, "never")
    with pytest.raises(Interrupt):
        await tasks()
    assert record.events == []
    assert error_records(caplog) == []  # not reported as a task failure
    (logged,) = warning_records(caplog)
    message = logged.getMessage()
    assert "stopped by Interrupt" in message
    assert f".<locals>.interrupt{'' if kind == 'sync' else '_async'} was interrupted" in message
    assert f"1 task(s) never started: {HERE}.Record" in message


async def test_base_exception_from_the_last_task_names_it_and_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def interrupt() -> None:
        raise Interrupt

    tasks = BackgroundTasks()
    tasks.add_task(interrupt)
    with pytest.raises(Interrupt):
        await tasks()
    (logged,) = warning_records(caplog)
    assert "0 task(s) never started: none" in logged.getMessage()


# --- Starlette's own tasks in an afterward collector --------------------------------------------


async def test_starlette_tasks_given_to_the_collector_still_run(record: Record) -> None:
    tasks = BackgroundTasks(
        tasks=[StarletteTask(record, "starlette sync"), StarletteTask(record.async_, "s-async")]
    )
    tasks.add_task(record, "afterward")
    tasks.tasks.append(StarletteTask(record, "appended"))
    nested = StarletteTasks()
    nested.add_task(record, "nested")
    tasks.tasks.append(nested)
    await tasks()
    assert record.events == ["starlette sync", "s-async", "afterward", "appended", "nested"]


async def test_failing_starlette_task_is_isolated_and_logged_by_its_function_name(
    record: Record, caplog: pytest.LogCaptureFixture
) -> None:
    tasks = BackgroundTasks(tasks=[StarletteTask(fail), StarletteTask(fail_async)])
    tasks.add_task(record, "next")
    await tasks()
    assert record.events == ["next"]
    assert [r.afterward_task for r in error_records(caplog)] == [  # type: ignore[attr-defined]
        f"{HERE}.fail",
        f"{HERE}.fail_async",
    ]


async def test_afterward_collector_nested_in_another_runs_its_own_tasks(record: Record) -> None:
    inner = BackgroundTasks()
    inner.add_task(record, "inner")
    outer = BackgroundTasks(tasks=[inner])
    outer.add_task(record, "outer")
    await outer()
    assert record.events == ["inner", "outer"]


# --- behind a real Starlette app ----------------------------------------------------------------


def app_with_background(make_background: Callable[[], StarletteTask]) -> Starlette:
    async def endpoint(request: Request) -> Response:
        return JSONResponse({"status": "queued"}, background=make_background())

    return Starlette(routes=[Route("/", endpoint)])


def client_for(app: Starlette) -> httpx.AsyncClient:
    # raise_app_exceptions (the default) makes any exception that leaves the app fail the call.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_app_answers_200_and_runs_the_next_task_when_the_first_one_raises(
    record: Record,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def background() -> BackgroundTasks:
        tasks = BackgroundTasks()
        tasks.add_task(fail)
        tasks.add_task(record, "second")
        return tasks

    async with client_for(app_with_background(background)) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert response.json() == {"status": "queued"}
    assert record.events == ["second"]
    assert len(error_records(caplog)) == 1


async def test_with_starlettes_own_collector_the_same_failure_reaches_the_client(
    record: Record,
) -> None:
    """Control for the test above: this harness does see an exception that leaves the app."""

    def background() -> StarletteTasks:
        tasks = StarletteTasks()
        tasks.add_task(fail)
        tasks.add_task(record, "second")
        return tasks

    async with client_for(app_with_background(background)) as client:
        with pytest.raises(TaskFailedError):
            await client.get("/")
    assert record.events == []


async def test_lone_afterward_background_task_as_background_isolates_its_failure(
    record: Record,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with client_for(app_with_background(lambda: BackgroundTask(fail))) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert len(error_records(caplog)) == 1

    async with client_for(app_with_background(lambda: BackgroundTask(record, "ran"))) as client:
        response = await client.get("/")
        response = await client.get("/")
    assert response.status_code == 200
    assert record.events == ["ran", "ran"]
    assert record.threads[0] != threading.get_ident()


async def test_stop_on_error_in_an_app_still_answers_200(
    record: Record,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def background() -> BackgroundTasks:
        tasks = BackgroundTasks(stop_on_error=True)
        tasks.add_task(fail_async)
        tasks.add_task(record, "skipped")
        return tasks

    async with client_for(app_with_background(background)) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert record.events == []
    assert "Skipping 1 background task(s)" in error_records(caplog)[1].getMessage()


async def test_a_suspended_task_in_its_own_context_keeps_it_and_can_be_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A task whose captured context differs from the running one is driven step by step."""
    seen: list[str] = []
    started = anyio.Event()
    resumed = anyio.Event()
    cancelled: list[bool] = []

    async def waits() -> None:
        seen.append(request_id.get())
        await resumed.wait()  # suspended here: the next steps must still be in the context
        seen.append(request_id.get())
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)
            seen.append(request_id.get())
            raise

    token = request_id.set("captured")
    tasks = BackgroundTasks()
    tasks.add_task(waits)
    tasks.add_task(read_request_id, seen)  # never started
    request_id.reset(token)  # the running context now differs from the captured one
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(tasks)
            resumed.set()
            await started.wait()
            tg.cancel_scope.cancel()
    assert seen == ["captured", "captured", "captured"]
    assert cancelled == [True]
    assert "waits was interrupted" in caplog.text
    assert "1 task(s) never started" in caplog.text


# --- task subclasses that override __call__ -----------------------------------------------------


class Timed(BackgroundTask):
    """An afterward task subclass wrapping the run, as timing or tracing wrappers do."""

    calls: list[str]

    async def __call__(self) -> None:
        self.calls.append(f"before {request_id.get()}")
        await super().__call__()
        self.calls.append("after")


class Retrying(BackgroundTask):
    """A retry wrapper: it has to see the exception `super().__call__()` raises."""

    async def __call__(self) -> None:
        for attempt in range(3):
            try:
                await super().__call__()
            except TaskFailedError:
                if attempt == 2:
                    raise
            else:
                return


class StarletteTimed(StarletteTask):
    calls: list[str]

    async def __call__(self) -> None:
        self.calls.append("before")
        await super().__call__()
        self.calls.append("after")


async def test_afterward_subclass_override_is_awaited_inside_a_collector(record: Record) -> None:
    token = request_id.set("captured")
    try:
        timed = Timed(record, "task")
    finally:
        request_id.reset(token)
    timed.calls = []
    tasks = BackgroundTasks([timed])
    tasks.add_task(record, "plain")
    await tasks()
    # The override runs in the captured context, once; the function runs once, then the next.
    assert timed.calls == ["before captured", "after"]
    assert record.events == ["task", "plain"]


async def test_starlette_subclass_override_is_awaited_inside_a_collector(record: Record) -> None:
    timed = StarletteTimed(record, "task")
    timed.calls = []
    tasks = BackgroundTasks([timed])
    await tasks()
    assert timed.calls == ["before", "after"]
    assert record.events == ["task"]


async def test_super_call_in_an_override_runs_sync_functions_on_the_collectors_limiter() -> None:
    limiter = anyio.CapacityLimiter(3)
    borrowed: list[float] = []
    seen: list[str] = []

    def task() -> None:
        borrowed.append(limiter.borrowed_tokens)
        seen.append(request_id.get())

    token = request_id.set("captured")
    try:
        timed = Timed(task)
    finally:
        request_id.reset(token)
    timed.calls = []
    await BackgroundTasks([timed], limiter=limiter)()
    assert borrowed == [1]
    assert seen == ["captured"]


async def test_super_call_raises_the_failure_for_the_override_to_retry() -> None:
    attempts: list[int] = []

    def flaky() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise TaskFailedError("not yet")

    tasks = BackgroundTasks([Retrying(flaky)])
    await tasks()
    assert len(attempts) == 3


async def test_failure_that_leaves_an_override_is_logged_under_the_tasks_name(
    record: Record, caplog: pytest.LogCaptureFixture
) -> None:
    tasks = BackgroundTasks([Retrying(fail_async)])
    tasks.add_task(record, "next")
    await tasks()
    assert record.events == ["next"]
    (logged,) = error_records(caplog)
    assert f"Background task {HERE}.fail_async failed" in logged.getMessage()


async def test_lone_subclass_as_a_background_runs_its_override_and_function_once(
    record: Record,
) -> None:
    timed = Timed(record, "task")
    timed.calls = []
    async with client_for(app_with_background(lambda: timed)) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert timed.calls == ["before unset", "after"]
    assert record.events == ["task"]


async def test_plain_tasks_next_to_a_subclass_are_still_batched(
    record: Record, thread_hops: list[Any]
) -> None:
    timed = Timed(record.async_, "wrapped")
    timed.calls = []
    tasks = BackgroundTasks([timed])
    tasks.add_task(record, 1)
    tasks.add_task(record, 2)
    await tasks()
    assert record.events == ["wrapped", 1, 2]
    assert len(thread_hops) == 1


# --- one task shared by concurrent runs ---------------------------------------------------------


async def test_one_sync_task_shared_by_concurrent_runs_runs_in_each() -> None:
    runs = 5
    barrier = threading.Barrier(runs, timeout=5)
    seen: list[str] = []

    def shared_task() -> None:
        barrier.wait()  # every run is inside the task at once
        seen.append(request_id.get())

    token = request_id.set("captured")
    try:
        shared = BackgroundTask(shared_task)
    finally:
        request_id.reset(token)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(runs):
                tg.start_soon(shared)
    assert seen == ["captured"] * runs


async def test_one_async_task_shared_by_concurrent_runs_runs_in_each() -> None:
    runs = 5
    inside = 0
    everyone_inside = anyio.Event()
    seen: list[str] = []

    async def shared_task() -> None:
        nonlocal inside
        inside += 1
        if inside == runs:
            everyone_inside.set()
        await everyone_inside.wait()
        seen.append(request_id.get())

    token = request_id.set("captured")
    try:
        shared = BackgroundTask(shared_task)
    finally:
        request_id.reset(token)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(runs):
                tg.start_soon(BackgroundTasks([shared]))
    assert seen == ["captured"] * runs


# --- context values are compared by identity, never with their own __eq__ -----------------------


class RefusesComparison:
    def __eq__(self, other: object) -> bool:
        raise TypeError("do not compare me")

    __hash__ = object.__hash__


comparable: contextvars.ContextVar[object] = contextvars.ContextVar("comparable")


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_context_value_whose_eq_raises_does_not_break_the_task(
    is_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[object] = []
    captured = RefusesComparison()

    def read() -> None:
        seen.append(comparable.get())

    async def read_async() -> None:
        read()

    async def run() -> None:
        comparable.set(captured)
        tasks = BackgroundTasks()
        tasks.add_task(read_async if is_async else read)
        comparable.set(RefusesComparison())  # the running context now differs from the captured
        await tasks()

    async with anyio.create_task_group() as tg:  # a task of its own, so the var stays in there
        tg.start_soon(run)
    assert seen == [captured]
    assert error_records(caplog) == []


# --- a lone afterward task, run by a response or by hand ----------------------------------------


async def test_lone_async_task_runs_in_its_captured_context() -> None:
    seen: list[str] = []
    token = request_id.set("captured")
    try:
        task = BackgroundTask(read_request_id_async, seen)
    finally:
        request_id.reset(token)
    await task()
    assert seen == ["captured"]


async def test_lone_task_interrupted_by_a_base_exception_names_it_and_reraises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def interrupted() -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        await BackgroundTask(interrupted)()
    (logged,) = warning_records(caplog)
    assert ".<locals>.interrupted was interrupted; 0 task(s) never started" in logged.getMessage()


async def test_super_call_awaits_the_coroutine_a_sync_function_returns(record: Record) -> None:
    def sync_wrapper() -> Awaitable[None]:
        return record.async_("awaited")

    timed = Timed(sync_wrapper)
    timed.calls = []
    await BackgroundTasks([timed])()
    assert record.events == ["awaited"]
    assert timed.calls == ["before unset", "after"]


@pytest.mark.anyio
async def test_a_collector_called_again_while_it_runs_runs_each_task_once() -> None:
    """Two runs at once (a cached response sent to two clients) never start a task twice."""
    ran: list[str] = []
    lock = threading.Lock()
    first_started = threading.Event()
    release = threading.Event()

    def slow() -> None:
        first_started.set()
        release.wait(5)
        with lock:
            ran.append("slow")

    def quick(tag: str) -> None:
        with lock:
            ran.append(tag)

    tasks = BackgroundTasks()
    tasks.add_task(slow)
    tasks.add_task(quick, "a")
    tasks.add_task(quick, "b")
    async with anyio.create_task_group() as tg:
        tg.start_soon(tasks)
        await anyio.to_thread.run_sync(first_started.wait, 5)
        tasks.add_task(quick, "c")
        with anyio.fail_after(5):
            await tasks()  # returns at once: the run in progress takes "c" too
        release.set()
    assert ran == ["slow", "a", "b", "c"]
