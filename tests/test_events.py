"""`afterward.on_event`, `add_attempt_scope` and the outcome counters, on their own."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

import afterward
from afterward import BackgroundTasks, TaskEvent
from afterward._events import count, counts, emit, hooked, listeners, scopes


def job() -> None: ...


@pytest.fixture(autouse=True)
def _no_leftover_hooks() -> Iterator[None]:
    yield
    assert not listeners, "a test left a callback registered"
    assert not scopes, "a test left a scope registered"


def test_a_callback_gets_the_queued_event_at_add_task_until_unsubscribed() -> None:
    seen: list[TaskEvent] = []
    stop = afterward.on_event(seen.append)
    try:
        assert hooked()
        entry = BackgroundTasks().add_task(job)
    finally:
        stop()
    BackgroundTasks().add_task(job)
    assert [(e.kind, e.name, e.id, e.attempt, e.task) for e in seen] == [
        ("queued", f"{__name__}.job", entry.id, 0, entry)
    ]
    assert not hooked()
    stop()  # a second call is harmless


def test_a_failing_callback_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: TaskEvent) -> None:
        raise RuntimeError("boom")

    seen: list[str] = []
    stops = [afterward.on_event(broken), afterward.on_event(lambda e: seen.append(e.kind))]
    try:
        entry = BackgroundTasks().add_task(job)
        emit("succeeded", entry, 1, 0.5)
    finally:
        for stop in stops:
            stop()
    assert seen == ["queued", "succeeded"]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 2
    assert "failed on the queued event of" in failures[0].getMessage()


def test_counts_add_up_per_outcome() -> None:
    before = counts()
    assert set(before) == {"succeeded", "failed", "retried", "cancelled", "abandoned"}
    count("failed")
    count("retried", 3)
    after = counts()
    assert after["failed"] == before["failed"] + 1
    assert after["retried"] == before["retried"] + 3
    assert after["succeeded"] == before["succeeded"]


def test_attempt_scope_registration_and_removal() -> None:
    @contextlib.contextmanager
    def scope(task: object, attempt: int) -> Iterator[None]:
        yield

    remove = afterward.add_attempt_scope(scope)
    assert scopes == [scope]
    assert hooked()
    remove()
    assert not hooked()


def test_non_callables_are_refused() -> None:
    with pytest.raises(TypeError, match="on_event"):
        afterward.on_event("print")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="add_attempt_scope"):
        afterward.add_attempt_scope(None)  # type: ignore[arg-type]


# -- emission order, as the runner emits ----------------------------------------------------------


@pytest.fixture
def recorded() -> Iterator[list[tuple[str, int]]]:
    """Record (kind, attempt) of every event while the test runs."""
    seen: list[tuple[str, int]] = []
    stop = afterward.on_event(lambda event: seen.append((event.kind, event.attempt)))
    yield seen
    stop()


class Flaky:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def sync(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"attempt {self.calls}")

    async def asynchronous(self) -> None:
        self.sync()


KINDS = ["sync", "async"]


def flaky_func(kind: str, failures: int) -> Any:
    flaky = Flaky(failures)
    return flaky.sync if kind == "sync" else flaky.asynchronous


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_events_of_a_success(kind: str, recorded: list[tuple[str, int]]) -> None:
    tasks = BackgroundTasks()
    tasks.add_task(flaky_func(kind, 0))
    await tasks()
    assert recorded == [("queued", 0), ("started", 1), ("succeeded", 1)]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_events_of_a_retry_then_success(kind: str, recorded: list[tuple[str, int]]) -> None:
    tasks = BackgroundTasks()
    tasks.add_task(afterward.task(flaky_func(kind, 1), retries=2))
    await tasks()
    assert recorded == [
        ("queued", 0),
        ("started", 1),
        ("retrying", 1),
        ("started", 2),
        ("succeeded", 2),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_events_of_a_final_failure(kind: str, recorded: list[tuple[str, int]]) -> None:
    tasks = BackgroundTasks(stop_on_error=True)
    tasks.add_task(afterward.task(flaky_func(kind, 5), retries=1))
    tasks.add_task(job)
    await tasks()
    assert recorded == [
        ("queued", 0),
        ("queued", 0),
        ("started", 1),
        ("retrying", 1),
        ("started", 2),
        ("failed", 2),
        ("abandoned", 0),
    ]


@pytest.mark.anyio
async def test_event_fields_name_the_task_and_time_the_attempt() -> None:
    events: list[TaskEvent] = []
    stop = afterward.on_event(events.append)
    try:
        tasks = BackgroundTasks()
        entry = tasks.add_task(afterward.task(flaky_func("async", 1), name="f", retries=1))
        await tasks()
    finally:
        stop()
    retrying = events[2]
    assert (retrying.kind, retrying.name, retrying.id, retrying.task) == (
        "retrying",
        "f",
        entry.id,
        entry,
    )
    assert isinstance(retrying.exception, ConnectionError)
    assert retrying.duration is not None
    assert retrying.duration >= 0
    assert events[1].duration is None  # started
    assert events[-1].exception is None  # succeeded


@pytest.mark.anyio
async def test_a_cancelled_task_emits_cancelled() -> None:
    import anyio

    started = anyio.Event()

    async def hangs() -> None:
        started.set()
        await anyio.sleep_forever()

    kinds: list[str] = []
    stop = afterward.on_event(lambda event: kinds.append(event.kind))
    try:
        tasks = BackgroundTasks()
        tasks.add_task(hangs)
        async with anyio.create_task_group() as group:
            group.start_soon(tasks)
            await started.wait()
            group.cancel_scope.cancel()
    finally:
        stop()
    assert kinds == ["queued", "started", "cancelled"]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_attempt_scopes_wrap_each_attempt_inside_its_context_and_thread(kind: str) -> None:
    import threading
    from contextvars import ContextVar

    var: ContextVar[str] = ContextVar("var", default="unset")
    log: list[tuple[str, int, str, bool, str | None]] = []

    @contextlib.contextmanager
    def scope(task: object, attempt: int) -> Iterator[None]:
        on_loop = threading.current_thread() is threading.main_thread()
        log.append(("enter", attempt, var.get(), on_loop, None))
        try:
            yield
        except BaseException as exc:
            log.append(("exit", attempt, var.get(), on_loop, type(exc).__name__))
            raise
        log.append(("exit", attempt, var.get(), on_loop, None))

    remove = afterward.add_attempt_scope(scope)
    try:
        var.set("request")
        tasks = BackgroundTasks()
        tasks.add_task(afterward.task(flaky_func(kind, 1), retries=1))
        var.set("later")
        await tasks()
    finally:
        remove()
    on_loop = kind == "async"
    assert log == [
        ("enter", 1, "request", on_loop, None),
        ("exit", 1, "request", on_loop, "ConnectionError"),
        ("enter", 2, "request", on_loop, None),
        ("exit", 2, "request", on_loop, None),
    ]


@pytest.mark.anyio
async def test_a_failing_attempt_scope_is_logged_and_the_task_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def __init__(self, where: str) -> None:
            self.where = where

        def __enter__(self) -> None:
            if self.where == "enter":
                raise RuntimeError("enter")

        def __exit__(self, *info: object) -> None:
            if self.where == "exit":
                raise RuntimeError("exit")

    ran: list[int] = []
    removers = [
        afterward.add_attempt_scope(lambda task, attempt: Broken("enter")),
        afterward.add_attempt_scope(lambda task, attempt: Broken("exit")),
    ]
    try:
        tasks = BackgroundTasks()
        entry = tasks.add_task(ran.append, 1)
        await tasks()
    finally:
        for remove in removers:
            remove()
    assert ran == [1]
    assert entry.status == "succeeded"
    assert "attempt scope" in caplog.text
    assert "failed to enter" in caplog.text
    assert "failed to exit" in caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_events_in_order_under_the_middleware(kind: str) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    from test_middleware import client, running

    handles: list[afterward.BackgroundTask] = []

    async def endpoint(request: Request) -> Response:
        tasks = afterward.current_tasks()
        handles.append(tasks.add_task(afterward.task(flaky_func(kind, 1), retries=1)))
        handles.append(tasks.add_task(job))
        return PlainTextResponse("ok")

    events: list[tuple[str, str, int]] = []
    stop = afterward.on_event(
        lambda event: events.append((event.kind, event.name.rpartition(".")[2], event.attempt))
    )
    app = afterward.BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]))
    try:
        async with running(app), client(app) as http:
            await http.get("/")
            with anyio.fail_after(5):
                await handles[1].wait()
    finally:
        stop()
    name = "sync" if kind == "sync" else "asynchronous"
    assert events == [
        ("queued", name, 0),
        ("queued", "job", 0),
        ("started", name, 1),
        ("retrying", name, 1),
        ("started", name, 2),
        ("succeeded", name, 2),
        ("started", "job", 1),
        ("succeeded", "job", 1),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("outcome", ["returns", "raises"])
async def test_a_sync_task_s_awaitable_runs_inside_its_attempt_scope(outcome: str) -> None:
    # A sync wrapper around an async function returns a coroutine: awaiting it is part of the
    # attempt, so the scope (an OpenTelemetry span) ends after it, with its exception.
    log: list[str] = []

    async def later() -> None:
        log.append("awaitable")
        if outcome == "raises":
            raise ConnectionError("down")

    def wrapper() -> Any:
        log.append("sync")
        return later()

    @contextlib.contextmanager
    def scope(task: object, attempt: int) -> Iterator[None]:
        log.append("enter")
        try:
            yield
        except BaseException as exc:
            log.append(f"exit {type(exc).__name__}")
            raise
        log.append("exit")

    remove = afterward.add_attempt_scope(scope)
    try:
        tasks = BackgroundTasks()
        entry = tasks.add_task(wrapper)
        await tasks()
    finally:
        remove()
    end = "exit ConnectionError" if outcome == "raises" else "exit"
    assert log == ["enter", "sync", "awaitable", end]
    assert entry.status == ("failed" if outcome == "raises" else "succeeded")
