"""Policies at run time: retries with backoff, async timeouts, `always=True` for failed requests."""

from __future__ import annotations

import logging
import threading

import anyio
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from afterward import (
    BackgroundTasks,
    BackgroundTasksMiddleware,
    Depends,
    current_tasks,
    inject,
    task,
)
from afterward.fastapi import BackgroundTasks as DropIn
from test_middleware import client, running

pytestmark = pytest.mark.anyio


class Flaky:
    """Fails its first `failures` calls with `error`, then succeeds; records the threads used."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0
        self.threads: list[bool] = []

    def sync(self, tag: str) -> str:
        self.calls += 1
        self.threads.append(threading.current_thread() is threading.main_thread())
        if self.calls <= self.failures:
            raise self.error(f"{tag} attempt {self.calls}")
        return tag

    async def asynchronous(self, tag: str) -> str:
        return self.sync(tag)


def field(record: logging.LogRecord, name: str) -> object:
    """Return one of the `extra` fields afterward puts on its log records."""
    return getattr(record, name)


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "afterward" and r.levelno == level]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_failing_task_is_retried_until_it_succeeds_each_failure_logged_with_its_attempt(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = Flaky(failures=2)
    func = flaky.sync if kind == "sync" else flaky.asynchronous
    tasks = BackgroundTasks()
    entry = tasks.add_task(task(func, name="flaky", retries=3, backoff=0.001), "x")
    with anyio.fail_after(5):
        await tasks()
    assert flaky.calls == 3
    assert (entry.status, entry.attempts) == ("succeeded", 3)
    assert isinstance(entry.exception, ConnectionError)  # the last failed attempt's
    warnings = records(caplog, logging.WARNING)
    assert [w.getMessage().split(" (")[0] for w in warnings] == [
        "Background task flaky failed on attempt 1 of 4",
        "Background task flaky failed on attempt 2 of 4",
    ]
    assert [(field(w, "afterward_attempt"), field(w, "afterward_outcome")) for w in warnings] == [
        (1, "retrying"),
        (2, "retrying"),
    ]
    assert not records(caplog, logging.ERROR)
    if kind == "sync":
        assert flaky.threads == [False, False, False]  # every attempt in a worker thread


async def test_the_final_failure_is_logged_at_error_after_the_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = Flaky(failures=10)
    tasks = BackgroundTasks()
    entry = tasks.add_task(task(flaky.asynchronous, name="doomed", retries=2), "x")
    after = tasks.add_task(flaky.sync, "next")
    with anyio.fail_after(5):
        await tasks()
    assert flaky.calls == 4  # three attempts, then the next task
    assert (entry.status, entry.attempts) == ("failed", 3)
    assert str(entry.exception) == "x attempt 3"
    assert after.status == "failed"
    assert len(records(caplog, logging.WARNING)) == 2
    errors = records(caplog, logging.ERROR)
    assert errors[0].getMessage() == (
        "Background task doomed failed after 3 attempts; the remaining tasks still run."
    )
    assert (field(errors[0], "afterward_task"), field(errors[0], "afterward_attempt")) == (
        "doomed",
        3,
    )
    assert field(errors[0], "afterward_task_id") == entry.id
    assert field(errors[0], "afterward_outcome") == "failed"
    assert isinstance(field(errors[0], "afterward_duration"), float)


async def test_an_exception_outside_retry_on_is_final_at_once() -> None:
    flaky = Flaky(failures=1, error=ValueError)
    tasks = BackgroundTasks()
    entry = tasks.add_task(task(flaky.sync, retries=5, retry_on=ConnectionError), "x")
    await tasks()
    assert (flaky.calls, entry.status, entry.attempts) == (1, "failed", 1)


async def test_backoff_waits_between_attempts_doubling(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    real_sleep = anyio.sleep

    async def fake_sleep(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr("afterward._attempt.anyio.sleep", fake_sleep)
    flaky = Flaky(failures=3)
    tasks = BackgroundTasks()
    tasks.add_task(task(flaky.sync, retries=3, backoff=2.0, backoff_max=5.0, jitter=False), "x")
    await tasks()
    assert slept == [2.0, 4.0, 5.0]


async def test_a_timeout_cancels_the_attempt_and_the_next_attempt_runs() -> None:
    attempts: list[int] = []
    cancelled = anyio.Event()

    async def slow_then_fast() -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                cancelled.set()
                raise

    tasks = BackgroundTasks()
    entry = tasks.add_task(task(slow_then_fast, timeout=0.05, retries=1))
    with anyio.fail_after(5):
        await tasks()
    assert cancelled.is_set()
    assert attempts == [1, 2]
    assert (entry.status, entry.attempts) == ("succeeded", 2)
    assert isinstance(entry.exception, TimeoutError)


async def test_a_timeout_without_retries_fails_the_task_with_timeout_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def hangs() -> None:
        await anyio.sleep_forever()

    tasks = BackgroundTasks()
    entry = tasks.add_task(task(hangs, timeout=0.01))
    with anyio.fail_after(5):
        await tasks()
    assert entry.status == "failed"
    assert isinstance(entry.exception, TimeoutError)
    assert records(caplog, logging.ERROR)[0].exc_info is not None


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_retries_run_detached_under_the_middleware(kind: str) -> None:
    flaky = Flaky(failures=2)
    func = flaky.sync if kind == "sync" else flaky.asynchronous
    handles = []

    async def endpoint(request: Request) -> Response:
        tasks = current_tasks()
        handles.append(tasks.add_task(task(func, retries=2, backoff=0.001), "x"))
        handles.append(tasks.add_task(flaky.sync, "after"))
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]))
    async with running(app), client(app) as http:
        await http.get("/")
        with anyio.fail_after(5):
            await handles[1].wait()
    assert [h.status for h in handles] == ["succeeded", "succeeded"]
    assert (handles[0].attempts, flaky.calls) == (3, 4)


def audit(log: list[str], what: str) -> None:
    log.append(what)


@pytest.mark.parametrize("failure", ["status", "raises"])
async def test_always_tasks_run_under_the_middleware_when_the_request_failed(
    failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "afterward")
    log: list[str] = []

    async def endpoint(request: Request) -> Response:
        tasks = current_tasks()
        tasks.add_task(audit, log, "skipped")
        tasks.add_task(task(audit, always=True), log, "audited")
        if failure == "raises":
            raise RuntimeError("boom")
        return PlainTextResponse("bad", status_code=500)

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]))
    async with running(app), client(app) as http:
        if failure == "raises":
            with pytest.raises(RuntimeError):
                await http.get("/")
        else:
            assert (await http.get("/")).status_code == 500
        assert app.supervisor is not None
        with anyio.fail_after(5):
            await app.supervisor.wait_idle()
    assert log == ["audited"]
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "afterward")
    assert "Not running 1 background task(s) because" in text
    assert "test_policy_runs.audit (the always=True ones still run)" in text


async def test_always_tasks_run_inline_before_the_error_of_an_injected_endpoint() -> None:
    log: list[str] = []

    async def endpoint(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(audit, log, "skipped")
        tasks.add_task(task(audit, always=True), log, "audited")
        raise RuntimeError("boom")

    app = Starlette(routes=[Route("/", inject(endpoint))])
    async with client(app) as http:
        with pytest.raises(RuntimeError):
            await http.get("/")
    assert log == ["audited"]


async def test_always_tasks_run_after_a_422_of_an_injected_endpoint() -> None:
    log: list[str] = []

    async def first(tasks: BackgroundTasks) -> BackgroundTasks:
        tasks.add_task(audit, log, "skipped")
        tasks.add_task(task(audit, always=True), log, "audited")
        return tasks

    async def validated(
        tasks: BackgroundTasks = Depends(first),
        number: int = 0,
    ) -> dict[str, int]:
        return {"number": number}

    app = Starlette(routes=[Route("/", inject(validated))])
    async with client(app) as http:
        response = await http.get("/?number=abc")
    assert response.status_code == 422
    assert log == ["audited"]


class Stop(BaseException):
    """Not an Exception: what a cancellation or an exit looks like to the middleware."""


async def test_always_tasks_of_a_request_stopped_by_a_base_exception_are_queued_at_once() -> None:
    log: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            await send({"type": "lifespan.shutdown.complete"})
            return
        tasks = current_tasks()
        tasks.add_task(audit, log, "skipped")
        tasks.add_task(task(audit, always=True), log, "audited")
        raise Stop

    middleware = BackgroundTasksMiddleware(app)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        pass

    async with running(middleware):
        with pytest.raises(Stop):
            await middleware({"type": "http", "path": "/"}, receive, send)
        assert middleware.supervisor is not None
        with anyio.fail_after(5):
            await middleware.supervisor.wait_idle()
    assert log == ["audited"]


async def test_always_tasks_run_before_the_error_of_a_fastapi_drop_in_route() -> None:
    log: list[str] = []
    app = FastAPI()

    @app.get("/")
    async def endpoint(background_tasks: DropIn) -> dict[str, str]:
        background_tasks.add_task(audit, log, "skipped")
        background_tasks.add_task(task(audit, always=True), log, "audited")
        raise RuntimeError("boom")

    async with client(app) as http:
        with pytest.raises(RuntimeError):
            await http.get("/")
    assert log == ["audited"]
