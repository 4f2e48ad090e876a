"""What every framework must show under `BackgroundTasksMiddleware`, written once.

Each `tests/test_frameworks_<name>.py` subclasses `FrameworkContract` and builds, with the real
framework, a small app whose handlers call `Probe.handle(action, request_id)`:

- `GET /async/<action>?id=<id>` from an async handler, `GET /sync/<action>?id=<id>` from a sync one
  (run in a thread by the framework);
- `handle` sets the request's context variable, queues tasks with `current_tasks()` and returns the
  status the handler must answer with: 404 the handler raises as the framework's own "not found"
  exception, any other status it returns as a plain-text response; for `raise` it raises;
- the framework's own startup and shutdown hooks call `Probe.app_startup()` and
  `Probe.app_shutdown()`.

The tests wait on events, never on time: `LifespanDriver` says when the middleware has taken the
server's shutdown message, so a task can still be running when the shutdown begins.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from types import ModuleType
from typing import ClassVar

import anyio
import anyio.lowlevel
import httpx
import pytest
from starlette.types import ASGIApp, Message, Scope

from afterward import current_tasks
from test_e2e_uvicorn import RecordOutcome, SlowTask
from test_middleware import running
from test_middleware_e2e import serving

request_id: ContextVar[str] = ContextVar("request_id", default="unset")

# Which backends a framework runs on. Litestar, Quart and Django run on asyncio only: their tests
# are not parametrised with trio at all (nothing skips), and each file says why.
BOTH_BACKENDS = ["asyncio", "trio"]


def asyncio_only(reason: str) -> list[object]:
    """Return the `anyio_backend` params of a framework that runs on asyncio only.

    Args:
        reason: Why the framework cannot run on trio, kept next to the fixture for readers.
    """
    del reason  # documentation only: there is no trio run to skip
    return ["asyncio"]


class Probe:
    """What the test apps' handlers and hooks call, and what the tests watch."""

    def __init__(self) -> None:
        self.events: list[str] = []  # lifespan hooks and the shutdown task, in order
        self.seen: list[tuple[str, str, bool]] = []  # (task, request id, ran in a worker thread)
        self.unwanted: list[str] = []
        self.blocked = anyio.Event()
        self.release = anyio.Event()
        self.done = anyio.Event()
        self.shutdown_delivered = anyio.Event()
        self.slow: SlowTask | None = None
        self.tagged_expected = 0
        self.tagged_done = anyio.Event()
        self._loop_thread = threading.get_ident()

    def app_startup(self) -> None:
        self.events.append("app startup")

    def app_shutdown(self) -> None:
        self.events.append("app shutdown")

    def handle(self, action: str, request_id_value: str) -> int:
        """Queue the tasks of `action` on the request's collector; return the status to answer."""
        request_id.set(request_id_value)
        tasks = current_tasks()
        if action == "ordered":
            tasks.add_task(record, self, "a")
            tasks.add_task(wait_then_record, self, "b")
            tasks.add_task(record, self, "c")
            tasks.add_task(record_last, self, "d")
            return 200
        if action == "tagged":
            tasks.add_task(record, self, "t1")
            tasks.add_task(count_tagged, self, "t2")
            return 200
        if action == "until-shutdown":
            tasks.add_task(finish_during_shutdown, self)
            return 200
        if action == "slow":
            assert self.slow is not None
            tasks.add_task(self.slow, request_id_value)
            return 200
        tasks.add_task(send_welcome_email, self, request_id_value)
        if action == "raise":
            raise RuntimeError("the handler failed after queuing its tasks")
        return int(action)

    def in_worker_thread(self) -> bool:
        return threading.get_ident() != self._loop_thread


def record(probe: Probe, tag: str) -> None:
    probe.seen.append((tag, request_id.get(), probe.in_worker_thread()))


async def wait_then_record(probe: Probe, tag: str) -> None:
    probe.blocked.set()
    await probe.release.wait()
    probe.seen.append((tag, request_id.get(), probe.in_worker_thread()))


async def record_last(probe: Probe, tag: str) -> None:
    probe.seen.append((tag, request_id.get(), probe.in_worker_thread()))
    probe.done.set()


async def count_tagged(probe: Probe, tag: str) -> None:
    probe.seen.append((tag, request_id.get(), probe.in_worker_thread()))
    if len(probe.seen) == probe.tagged_expected:
        probe.tagged_done.set()


async def finish_during_shutdown(probe: Probe) -> None:
    await probe.shutdown_delivered.wait()
    # Still busy for a while after the server asked to shut down: an app told of the shutdown
    # without waiting for the drain would run its own shutdown hook in these turns.
    for _ in range(50):
        await anyio.lowlevel.checkpoint()
    probe.events.append("task done")


def send_welcome_email(probe: Probe, request_id_value: str) -> None:
    probe.unwanted.append(request_id_value)


class LifespanDriver:
    """Speak the lifespan protocol to an app as a server does; flag when shutdown is taken."""

    def __init__(self, app: ASGIApp, probe: Probe) -> None:
        self.app = app
        self.probe = probe
        self.sent: list[Message] = []

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        to_app, app_inbox = anyio.create_memory_object_stream[Message](4)
        app_outbox, from_app = anyio.create_memory_object_stream[Message](4)

        async def receive() -> Message:
            message = await app_inbox.receive()
            if message["type"] == "lifespan.shutdown":
                self.probe.shutdown_delivered.set()
            return message

        async def send(message: Message) -> None:
            self.sent.append(message)
            await app_outbox.send(message)

        scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        async with to_app, app_inbox, app_outbox, from_app, anyio.create_task_group() as tg:

            async def call_app() -> None:
                await self.app(scope, receive, send)

            tg.start_soon(call_app)
            await to_app.send({"type": "lifespan.startup"})
            with anyio.fail_after(5):
                answer = await from_app.receive()
            assert answer["type"] == "lifespan.startup.complete", answer
            try:
                yield
            finally:
                await to_app.send({"type": "lifespan.shutdown"})
                with anyio.fail_after(5):
                    answer = await from_app.receive()
                assert answer["type"] == "lifespan.shutdown.complete", answer


def client(app: ASGIApp) -> httpx.AsyncClient:
    # The frameworks answer a raised exception with a 500 (or re-raise it, as Starlette does
    # after answering): either way the test looks at what was sent and what ran.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


class AfterwardLog(logging.Handler):
    """The records of the "afterward" logger, kept by a handler on that logger itself.

    pytest's caplog listens on the root logger, which some frameworks reconfigure at startup
    (Litestar's default logging config replaces the root handlers): listen where afterward logs.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def not_run(self) -> list[logging.LogRecord]:
        return [r for r in self.records if "Not running" in r.getMessage()]


class FrameworkContract:
    """The behaviour every framework shows under the middleware; subclasses build the app."""

    # Events the app's own lifespan records around a task still running at shutdown.
    lifespan_events: ClassVar[list[str]] = ["app startup", "task done", "app shutdown"]

    @pytest.fixture
    def afterward_log(self) -> Iterator[AfterwardLog]:
        logger = logging.getLogger("afterward")
        handler = AfterwardLog()
        level = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        try:
            yield handler
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)

    def build(self, probe: Probe) -> ASGIApp:
        """Return the framework's app, wrapped with (or holding) BackgroundTasksMiddleware."""
        raise NotImplementedError

    @pytest.mark.parametrize("kind", ["async", "sync"])
    async def test_tasks_run_after_the_response_detached_in_order_with_the_request_context(
        self, kind: str
    ) -> None:
        probe = Probe()
        app = self.build(probe)
        async with LifespanDriver(app, probe).running(), client(app) as http:
            response = await http.get(f"/{kind}/ordered", params={"id": "r-7"})
            assert response.status_code == 200
            assert response.text == "ok"
            with anyio.fail_after(5):
                await probe.blocked.wait()
            # The request's ASGI call has returned while task "b" is still blocked.
            assert [tag for tag, _, _ in probe.seen] == ["a"]
            probe.release.set()
            with anyio.fail_after(5):
                await probe.done.wait()
        assert probe.seen == [
            ("a", "r-7", True),  # sync: in a worker thread
            ("b", "r-7", False),  # async: on the event loop
            ("c", "r-7", True),
            ("d", "r-7", False),
        ]

    async def test_concurrent_requests_each_run_their_own_tasks_with_their_own_context(
        self,
    ) -> None:
        probe = Probe()
        probe.tagged_expected = 2 * 8
        app = self.build(probe)
        async with LifespanDriver(app, probe).running(), client(app) as http:
            async with anyio.create_task_group() as tg:
                for n in range(8):
                    kind = "sync" if n % 2 else "async"
                    tg.start_soon(http.get, f"/{kind}/tagged?id=r-{n}")
            with anyio.fail_after(5):
                await probe.tagged_done.wait()
        # Each request's two tasks ran once, in order, and saw that request's id and no other.
        by_request: dict[str, list[str]] = {}
        for tag, seen_id, _ in probe.seen:
            by_request.setdefault(seen_id, []).append(tag)
        assert by_request == {f"r-{n}": ["t1", "t2"] for n in range(8)}

    @pytest.mark.parametrize("kind", ["async", "sync"])
    @pytest.mark.parametrize("status", [404, 500])
    async def test_an_error_response_does_not_run_the_tasks_and_logs_them_by_name(
        self, kind: str, status: int, afterward_log: AfterwardLog
    ) -> None:
        probe = Probe()
        app = self.build(probe)
        async with LifespanDriver(app, probe).running(), client(app) as http:
            response = await http.get(f"/{kind}/{status}", params={"id": "e-1"})
            assert response.status_code == status
        assert probe.unwanted == []  # the drain at shutdown is over: it never ran
        (message,) = afterward_log.not_run()
        assert message.levelno == logging.INFO
        assert "send_welcome_email" in message.getMessage()
        # A framework may answer a 404 exception itself or let it through the middleware.
        assert f"status was {status}" in message.getMessage() or "raised" in message.getMessage()

    @pytest.mark.parametrize("kind", ["async", "sync"])
    async def test_a_raised_exception_does_not_run_the_tasks_and_logs_them_by_name(
        self, kind: str, afterward_log: AfterwardLog
    ) -> None:
        probe = Probe()
        app = self.build(probe)
        async with LifespanDriver(app, probe).running(), client(app) as http:
            response = await http.get(f"/{kind}/raise", params={"id": "boom"})
            assert response.status_code == 500
        assert probe.unwanted == []
        (message,) = afterward_log.not_run()
        assert "send_welcome_email" in message.getMessage()
        text = message.getMessage()
        assert "status was 500" in text or "the app raised RuntimeError" in text

    async def test_lifespan_hooks_run_and_the_drain_comes_before_the_apps_shutdown(self) -> None:
        probe = Probe()
        app = self.build(probe)
        driver = LifespanDriver(app, probe)
        async with driver.running(), client(app) as http:
            assert (await http.get("/async/until-shutdown")).status_code == 200
            assert "task done" not in probe.events  # it waits for the shutdown to begin
        assert probe.events == self.lifespan_events
        assert [m["type"] for m in driver.sent] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]


class ServedByUvicorn:
    """One test through a real uvicorn (lifespan on) per framework."""

    def build(self, probe: Probe) -> ASGIApp:
        raise NotImplementedError

    lifespan_events: ClassVar[list[str]] = FrameworkContract.lifespan_events

    async def test_through_real_uvicorn_the_server_never_waits_for_the_task(self) -> None:
        probe = Probe()
        probe.slow = slow = SlowTask()
        outcome = RecordOutcome(self.build(probe))
        try:
            async with serving(outcome) as url, httpx.AsyncClient(base_url=url) as http:
                with anyio.fail_after(5):
                    response = await http.get("/async/slow", params={"id": "u-1"})
                assert response.status_code == 200
                assert response.text == "ok"
                await slow.started.wait()
                await outcome.done.wait()  # the server's call of the app has returned ...
                assert not slow.finished.is_set()  # ... while the task still runs
                slow.release.set()
                await slow.finished.wait()
        finally:
            slow.release.set()
        assert outcome.errors == []
        assert slow.arguments == ["u-1"]
        assert [e for e in probe.events if e != "task done"] == [
            e for e in self.lifespan_events if e != "task done"
        ]


async def check_signup_example(
    example: ModuleType, afterward_log: AfterwardLog, path: str = "/signup"
) -> None:
    """Sign up twice through an example's `app`: the first runs both tasks, the 409 runs none."""
    example.audit_log.clear()
    example.outbox.clear()
    example.registered.clear()
    app = example.app
    async with running(app), client(app) as http:
        first = await http.post(f"{path}/ada@example.com", headers={"X-Request-ID": "r-1"})
        assert first.status_code == 201, first.text
        assert first.json() == {"message": "Welcome, ada@example.com"}
        again = await http.post(f"{path}/ada@example.com", headers={"X-Request-ID": "r-2"})
        assert again.status_code == 409, again.text
    # Shutdown drained the supervisor: whatever was going to run has run.
    assert example.audit_log == ["r-1 signup ada@example.com"]  # a sync task, in a worker
    assert example.outbox == ["r-1 welcome ada@example.com"]  # an async task, on the loop
    (message,) = afterward_log.not_run()
    assert "status was 409" in message.getMessage() or "raised" in message.getMessage()
    assert "write_audit_line, " in message.getMessage()
    assert "send_welcome_email" in message.getMessage()
