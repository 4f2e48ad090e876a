"""BackgroundTasksMiddleware: one collector per request, detached runs, run policy, lifespan."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from afterward import BackgroundTasks, BackgroundTasksMiddleware, current_tasks

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def running(app: ASGIApp) -> AsyncIterator[list[Message]]:
    """Run `app`'s lifespan as a server would: startup before the block, shutdown after it."""
    to_app_send, to_app_receive = anyio.create_memory_object_stream[Message](10)
    from_app_send, from_app_receive = anyio.create_memory_object_stream[Message](10)
    sent: list[Message] = []

    async def receive() -> Message:
        return await to_app_receive.receive()

    async def send(message: Message) -> None:
        sent.append(message)
        await from_app_send.send(message)

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
    streams = (to_app_send, to_app_receive, from_app_send, from_app_receive)
    async with streams[0], streams[1], streams[2], streams[3], anyio.create_task_group() as tg:

        async def serve() -> None:
            await app(scope, receive, send)

        tg.start_soon(serve)
        await to_app_send.send({"type": "lifespan.startup"})
        with anyio.fail_after(5):
            assert (await from_app_receive.receive())["type"] == "lifespan.startup.complete"
        try:
            yield sent
        finally:
            await to_app_send.send({"type": "lifespan.shutdown"})
            with anyio.fail_after(10):
                message = await from_app_receive.receive()
            assert message["type"] == "lifespan.shutdown.complete"


def client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_the_request_returns_before_its_task_finishes() -> None:
    release = anyio.Event()
    done = anyio.Event()

    async def slow(tag: str) -> None:
        await release.wait()
        done.set()

    async def endpoint(request: Request) -> Response:
        current_tasks().add_task(slow, "x")
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]))
    async with running(app), client(app) as http:
        response = await http.get("/")
        assert response.text == "ok"
        assert not done.is_set()  # the ASGI call returned while the task still waits
        release.set()
        with anyio.fail_after(5):
            await done.wait()


async def test_sync_tasks_run_in_worker_threads_in_order_with_their_context() -> None:
    var: ContextVar[str] = ContextVar("var", default="unset")
    seen: list[tuple[str, str, bool]] = []
    done = threading.Event()

    def record(tag: str) -> None:
        seen.append((tag, var.get(), threading.current_thread() is threading.main_thread()))
        if tag == "c":
            done.set()

    async def endpoint(request: Request) -> Response:
        var.set(request.query_params["id"])
        tasks = current_tasks()
        for tag in "abc":
            tasks.add_task(record, tag)
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]))
    async with running(app) as _, client(app) as http:
        await http.get("/?id=7")
        assert app.supervisor is not None
        with anyio.fail_after(5):
            await app.supervisor.wait_idle()
    assert done.is_set()
    assert seen == [("a", "7", False), ("b", "7", False), ("c", "7", False)]


async def test_sync_and_async_tasks_keep_their_order() -> None:
    order: list[str] = []

    def sync(tag: str) -> None:
        order.append(tag)

    async def asynchronous(tag: str) -> None:
        await anyio.sleep(0)
        order.append(tag)

    async def endpoint(request: Request) -> Response:
        tasks = current_tasks()
        tasks.add_task(sync, "1")
        tasks.add_task(sync, "2")
        tasks.add_task(asynchronous, "3")
        tasks.add_task(sync, "4")
        tasks.add_task(asynchronous, "5")
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]))
    async with running(app), client(app) as http:
        await http.get("/")
        assert app.supervisor is not None
        with anyio.fail_after(5):
            await app.supervisor.wait_idle()
    assert order == ["1", "2", "3", "4", "5"]


async def test_current_tasks_outside_a_request_says_how_to_get_one() -> None:
    with pytest.raises(LookupError, match="BackgroundTasksMiddleware"):
        current_tasks()


async def test_every_way_into_the_request_sees_the_same_collector() -> None:
    seen: list[BackgroundTasks] = []

    def from_a_thread() -> None:
        seen.append(current_tasks())

    def endpoint(request: Request) -> Response:  # a sync endpoint: Starlette runs it in a thread
        seen.append(current_tasks())
        return PlainTextResponse("ok")

    async def inner_middleware(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(current_tasks())
        await anyio.to_thread.run_sync(from_a_thread)
        await starlette_app(scope, receive, send)

    starlette_app = Starlette(routes=[Route("/", endpoint)])
    app = BackgroundTasksMiddleware(inner_middleware)
    async with running(app), client(app) as http:
        await http.get("/")
        await http.get("/")
    assert len(seen) == 6
    assert seen[0] is seen[1] is seen[2]
    assert seen[3] is seen[4] is seen[5]
    assert seen[0] is not seen[3]


@pytest.mark.parametrize(
    ("status", "run_when", "runs"),
    [
        (200, "success", True),
        (302, "success", True),
        (404, "success", False),
        (500, "success", False),
        (404, "completed", True),
        (500, "always", True),
    ],
)
async def test_run_policy_by_status(
    status: int, run_when: Any, runs: bool, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[int] = []

    def welcome(status: int) -> None:
        ran.append(status)

    async def endpoint(request: Request) -> Response:
        current_tasks().add_task(welcome, status)
        return PlainTextResponse("x", status_code=status)

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]), run_when=run_when)
    with caplog.at_level(logging.INFO, logger="afterward"):
        async with running(app), client(app) as http:
            await http.get("/")
            assert app.supervisor is not None
            with anyio.fail_after(5):
                await app.supervisor.wait_idle()
    assert ran == ([status] if runs else [])
    if not runs:
        (record,) = [r for r in caplog.records if "Not running" in r.getMessage()]
        assert record.levelno == logging.INFO
        assert "test_middleware.test_run_policy_by_status.<locals>.welcome" in record.getMessage()
        assert f"status was {status}" in record.getMessage()


async def test_tasks_of_a_request_that_raised_are_logged_not_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    async def endpoint(request: Request) -> Response:
        current_tasks().add_task(ran.append, "x")
        raise RuntimeError("boom")

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]))
    async with running(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            assert (await http.get("/")).status_code == 500
    assert ran == []
    messages = [r.getMessage() for r in caplog.records if r.name == "afterward"]
    assert any("because the app raised RuntimeError: list.append" in m for m in messages)


async def test_a_task_added_after_the_run_has_ended_is_refused() -> None:
    kept: list[BackgroundTasks] = []

    async def endpoint(request: Request) -> Response:
        tasks = current_tasks()
        kept.append(tasks)
        tasks.add_task(lambda: None)
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]))
    async with running(app), client(app) as http:
        await http.get("/")
        assert app.supervisor is not None
        with anyio.fail_after(5):
            await app.supervisor.wait_idle()
        with pytest.raises(RuntimeError, match="already run"):
            kept[0].add_task(lambda: None)


async def test_websocket_tasks_run_after_the_session_ends() -> None:
    ran = anyio.Event()
    closed_first: list[bool] = []
    session_over = anyio.Event()

    async def after() -> None:
        closed_first.append(session_over.is_set())
        ran.set()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        current_tasks().add_task(after)
        await websocket.send_text("hi")
        await websocket.close()
        session_over.set()

    app = BackgroundTasksMiddleware(Starlette(routes=[WebSocketRoute("/ws", endpoint)]))
    inbox = [{"type": "websocket.connect"}]
    outbox: list[Message] = []

    async def receive() -> Message:
        if inbox:
            return inbox.pop()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        outbox.append(message)

    async with running(app):
        await app(
            {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}, receive, send
        )
        with anyio.fail_after(5):
            await ran.wait()
    assert closed_first == [True]
    assert [m["type"] for m in outbox] == ["websocket.accept", "websocket.send", "websocket.close"]


async def test_without_lifespan_tasks_run_inline_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[int] = []

    async def endpoint(request: Request) -> Response:
        current_tasks().add_task(ran.append, 1)
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]))
    async with client(app) as http:
        await http.get("/")
        await http.get("/")
    assert ran == [1, 1]  # inline: done when the ASGI call returned
    warnings = [r for r in caplog.records if "no running supervisor" in r.getMessage()]
    assert len(warnings) == 1


async def test_an_app_without_lifespan_support_still_gets_a_supervisor() -> None:
    ran = anyio.Event()

    async def set_ran() -> None:
        ran.set()

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"This app only speaks HTTP, not {scope['type']}.")
        current_tasks().add_task(set_ran)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = BackgroundTasksMiddleware(raw_app)
    async with running(app), client(app) as http:
        assert (await http.get("/")).text == "ok"
        assert app.supervisor is not None
        assert app.supervisor.running
        with anyio.fail_after(5):
            await ran.wait()


async def test_tasks_drain_before_the_app_hears_of_shutdown() -> None:
    events: list[str] = []
    release = anyio.Event()

    async def task() -> None:
        await release.wait()
        events.append("task done")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("app startup")
        yield
        events.append("app shutdown")

    async def endpoint(request: Request) -> Response:
        current_tasks().add_task(task)
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)], lifespan=lifespan))
    async with running(app), client(app) as http:
        await http.get("/")
        release.set()
    assert events == ["app startup", "task done", "app shutdown"]


class Stuck:
    """Tasks a drain cannot wait for: one hangs on the loop, one blocks its worker thread."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.thread_started = threading.Event()
        self.release = threading.Event()

    async def hangs(self) -> None:
        self.started.set()
        await anyio.sleep_forever()

    def blocks(self) -> None:
        self.thread_started.set()
        self.release.wait(10)


async def test_drain_deadline_cancels_async_tasks_and_names_every_abandoned_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stuck = Stuck()
    started, thread_started, release_thread = stuck.started, stuck.thread_started, stuck.release
    hangs, blocks = stuck.hangs, stuck.blocks

    def never() -> None:
        raise AssertionError("must not start")

    async def endpoint(request: Request) -> Response:
        tasks = current_tasks()
        if request.query_params["kind"] == "async":
            tasks.add_task(hangs)
        else:
            tasks.add_task(blocks)
        tasks.add_task(never)
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]), drain_timeout=0.05)
    try:
        async with running(app), client(app) as http:
            await http.get("/?kind=async")
            await http.get("/?kind=sync")
            with anyio.fail_after(5):
                await started.wait()
                await anyio.to_thread.run_sync(thread_started.wait)
    finally:
        release_thread.set()
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "afterward")
    assert "hangs was interrupted" in text
    assert "blocks is still running in its worker thread" in text
    assert "cannot be cancelled" in text
    assert text.count("never") >= 2


async def test_limits_hold_under_load() -> None:
    running_now = 0
    peak = 0
    count = 0
    lock = threading.Lock()

    async def task() -> None:
        nonlocal running_now, peak, count
        running_now += 1
        peak = max(peak, running_now)
        await anyio.sleep(0)
        await anyio.sleep(0)
        running_now -= 1
        count += 1

    def sync_task() -> None:
        nonlocal count
        with lock:
            count += 1

    async def endpoint(request: Request) -> Response:
        current_tasks().add_task(task)
        current_tasks().add_task(sync_task)
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(
        Starlette(routes=[Route("/", endpoint)]), max_running=3, workers=2
    )
    async with running(app), client(app) as http:
        async with anyio.create_task_group() as tg:
            for _ in range(60):
                tg.start_soon(http.get, "/")
        assert app.supervisor is not None
        with anyio.fail_after(10):
            await app.supervisor.wait_idle()
    assert count == 120
    assert 1 <= peak <= 3


def one_slot_app(
    release: anyio.Event, ran: list[int], *, handoff_timeout: float
) -> BackgroundTasksMiddleware:
    """An app with one running slot and one waiting place; each task waits for `release`."""

    async def blocked(n: int) -> None:
        await release.wait()
        ran.append(n)

    async def endpoint(request: Request) -> Response:
        current_tasks().add_task(blocked, int(request.query_params["n"]))
        return PlainTextResponse("ok")

    return BackgroundTasksMiddleware(
        Starlette(routes=[Route("/", endpoint)]),
        max_running=1,
        max_waiting=1,
        handoff_timeout=handoff_timeout,
    )


async def test_a_full_queue_waits_then_logs_the_tasks_it_could_not_take(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = anyio.Event()
    ran: list[int] = []

    app = one_slot_app(release, ran, handoff_timeout=0.01)
    async with running(app), client(app) as http:
        await http.get("/?n=1")  # runs (and blocks)
        await http.get("/?n=2")  # waits
        await http.get("/?n=3")  # no room: waits 10 ms, then logged
        release.set()
        assert app.supervisor is not None
        with anyio.fail_after(5):
            await app.supervisor.wait_idle()
    assert sorted(ran) == [1, 2]
    (record,) = [r for r in caplog.records if "max_waiting" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert "blocked" in record.getMessage()


async def run_detached(app: ASGIApp, path: str = "/") -> None:
    """Send one request to `app` with its lifespan running, and wait until its tasks are over."""
    assert isinstance(app, BackgroundTasksMiddleware)
    async with running(app), client(app) as http:
        await http.get(path)
        assert app.supervisor is not None
        with anyio.fail_after(5):
            await app.supervisor.wait_idle()


async def test_a_failing_sync_task_in_a_worker_is_logged_reported_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []
    reported: list[tuple[str, str]] = []
    reported_async = anyio.Event()

    def fails() -> None:
        raise ValueError("bad address")

    def on_error(task: Any, exc: Exception) -> None:
        reported.append((task.name, str(exc)))

    async def on_error_async(task: Any, exc: Exception) -> None:
        reported.append(("async", str(exc)))
        reported_async.set()

    async def endpoint(request: Request) -> Response:
        tasks = current_tasks()
        tasks.add_task(fails)
        tasks.add_task(ran.append, "next")
        return PlainTextResponse("ok")

    for callback in (on_error, on_error_async):
        app = BackgroundTasksMiddleware(
            Starlette(routes=[Route("/", endpoint)]),
            collector=lambda callback=callback: BackgroundTasks(on_error=callback),  # type: ignore[misc]
        )
        await run_detached(app)
    with anyio.fail_after(5):
        await reported_async.wait()
    assert ran == ["next", "next"]
    assert reported[0] == (f"{__name__}.{fails.__qualname__}", "bad address")
    assert reported[1] == ("async", "bad address")
    failures = [
        r for r in caplog.records if "failed; the remaining tasks still run" in r.getMessage()
    ]
    assert len(failures) == 2
    assert failures[0].exc_info is not None


async def test_stop_on_error_in_a_worker_skips_and_names_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    def fails() -> None:
        raise ValueError("no")

    async def endpoint(request: Request) -> Response:
        tasks = current_tasks()
        tasks.add_task(fails)
        tasks.add_task(ran.append, "skipped")
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(
        Starlette(routes=[Route("/", endpoint)]),
        collector=lambda: BackgroundTasks(stop_on_error=True),
    )
    await run_detached(app)
    assert ran == []
    assert any("Skipping 1 background task(s)" in r.getMessage() for r in caplog.records)


async def test_an_awaitable_returned_by_a_sync_task_is_awaited_before_the_next_task() -> None:
    order: list[str] = []

    async def later() -> None:
        order.append("awaited")

    def returns_awaitable() -> Any:
        order.append("sync")
        return later()

    async def endpoint(request: Request) -> Response:
        tasks = current_tasks()
        tasks.add_task(returns_awaitable)
        tasks.add_task(order.append, "next")
        return PlainTextResponse("ok")

    await run_detached(BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)])))
    assert order == ["sync", "awaited", "next"]


async def test_a_task_raising_system_exit_in_a_worker_is_named_and_the_rest_never_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def exits() -> None:
        raise SystemExit(3)

    async def endpoint(request: Request) -> Response:
        tasks = current_tasks()
        tasks.add_task(exits)
        tasks.add_task(print, "never")
        return PlainTextResponse("ok")

    await run_detached(BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)])))
    (record,) = [r for r in caplog.records if "interrupted by SystemExit" in r.getMessage()]
    assert "exits was interrupted" in record.getMessage()
    assert "never started: builtins.print" in record.getMessage()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_running", 0),
        ("max_waiting", -1),
        ("workers", 1.5),
        ("drain_timeout", -1),
        ("handoff_timeout", "5"),
        ("run_when", "sometimes"),
    ],
)
def test_bad_options_are_refused_with_the_option_named(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=option):
        BackgroundTasksMiddleware(Starlette(), **{option: value})  # type: ignore[arg-type]


async def test_a_collector_factory_that_returns_something_else_fails_loudly() -> None:
    async def endpoint(request: Request) -> Response:
        current_tasks()
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(
        Starlette(routes=[Route("/", endpoint)]),
        collector=list,  # type: ignore[arg-type]
    )
    with pytest.raises(TypeError, match=r"must return an afterward\.BackgroundTasks"):
        async with client(app) as http:
            await http.get("/")


REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="none")


async def test_concurrent_requests_tasks_never_mix() -> None:
    """Each request's tasks, and only those, run for it, with its own context variables."""
    seen: dict[str, list[tuple[str, str, str]]] = {}
    lock = threading.Lock()

    def sync_task(request_id: str, step: str) -> None:
        with lock:
            seen.setdefault(request_id, []).append((step, REQUEST_ID.get(), "sync"))

    async def async_task(request_id: str, step: str) -> None:
        await anyio.sleep(0)
        with lock:
            seen.setdefault(request_id, []).append((step, REQUEST_ID.get(), "async"))

    async def endpoint(request: Request) -> Response:
        request_id = request.query_params["id"]
        REQUEST_ID.set(request_id)
        tasks = current_tasks()
        tasks.add_task(sync_task, request_id, "1")
        await anyio.sleep(0)  # let other requests interleave while this one is being handled
        tasks.add_task(async_task, request_id, "2")
        current_tasks().add_task(sync_task, request_id, "3")
        return PlainTextResponse(request_id)

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]), workers=4)
    ids = [str(n) for n in range(100)]
    async with running(app), client(app) as http:
        async with anyio.create_task_group() as tg:
            for request_id in ids:
                tg.start_soon(http.get, f"/?id={request_id}")
        assert app.supervisor is not None
        with anyio.fail_after(10):
            await app.supervisor.wait_idle()
    assert sorted(seen) == sorted(ids)
    for request_id, steps in seen.items():
        assert steps == [
            ("1", request_id, "sync"),
            ("2", request_id, "async"),
            ("3", request_id, "sync"),
        ]


async def test_a_request_cancelled_while_its_hand_off_waits_names_its_tasks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = anyio.Event()

    app = one_slot_app(release, [], handoff_timeout=30)
    async with running(app), client(app) as http:
        await http.get("/?n=1")  # runs, and blocks
        await http.get("/?n=2")  # waits for the running slot
        with anyio.move_on_after(0.05):  # the third hand-off waits for room: cancel the request
            await http.get("/?n=3")
        release.set()
        assert app.supervisor is not None
        with anyio.fail_after(5):
            await app.supervisor.wait_idle()
    messages = [r.getMessage() for r in caplog.records if r.name == "afterward"]
    assert any(
        "Not running 1 background task(s) because the request was cancelled" in m and "blocked" in m
        for m in messages
    ), messages


async def test_a_drain_cancelled_from_outside_still_names_what_it_abandons(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stuck = Stuck()
    started, thread_started, release_thread = stuck.started, stuck.thread_started, stuck.release
    hangs, blocks = stuck.hangs, stuck.blocks

    async def endpoint(request: Request) -> Response:
        if request.query_params.get("sync"):
            current_tasks().add_task(blocks)
        else:
            current_tasks().add_task(hangs)
        current_tasks().add_task(print, "never")
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]), drain_timeout=60)
    supervisor_ready = anyio.Event()

    async def serve() -> None:
        scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
        messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

        async def receive() -> Message:
            if len(messages) == 1:
                await started.wait()
            return messages.pop(0)

        async def send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                supervisor_ready.set()

        await app(scope, receive, send)

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        with anyio.fail_after(5):
            await supervisor_ready.wait()
        async with client(app) as http:
            await http.get("/")
            await http.get("/?sync=1")
        with anyio.fail_after(5):
            await started.wait()
            await anyio.to_thread.run_sync(thread_started.wait, 5)
        await anyio.sleep(0)  # the drain starts waiting
        tg.cancel_scope.cancel()  # the server gives up on the lifespan (a forced exit)
    release_thread.set()
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "afterward")
    assert "hangs was interrupted" in text, text
    assert "blocks is still running in its worker thread" in text, text
    assert text.count("builtins.print") == 2, text


async def test_sync_tasks_still_queued_at_the_drain_deadline_are_named_never_started(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stuck = Stuck()

    def queued(n: int) -> None:
        raise AssertionError("must not start")

    async def endpoint(request: Request) -> Response:
        if request.query_params.get("block"):
            current_tasks().add_task(stuck.blocks)
        else:
            current_tasks().add_task(queued, 2)
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(
        Starlette(routes=[Route("/", endpoint)]), workers=1, drain_timeout=0.05
    )
    try:
        async with running(app), client(app) as http:
            await http.get("/?block=1")  # takes the only worker thread
            with anyio.fail_after(5):
                await anyio.to_thread.run_sync(stuck.thread_started.wait, 5)
            await http.get("/")  # waits in the queue for a worker
    finally:
        stuck.release.set()
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "afterward")
    assert "the app shut down before they started (drain_timeout of 0.05 s expired)" in text
    assert "queued" in text
    assert "blocks is still running in its worker thread" in text
