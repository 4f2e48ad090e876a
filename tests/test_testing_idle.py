"""afterward.testing.wait_idle and lifespan: deterministic tests of apps under the middleware."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from afterward import BackgroundTasksMiddleware, current_tasks
from afterward.testing import IdleWaiter, lifespan, record_tasks, wait_idle, wait_idle_sync

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


class Gate:
    """A sync task that waits until the test opens the gate, then records that it ran."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.ran: list[str] = []

    def __call__(self, what: str) -> None:
        if not self.open.wait(10):
            raise TimeoutError("the test never opened the gate")
        self.ran.append(what)


def starlette_app(gate: Gate) -> Starlette:
    async def endpoint(request: Request) -> Response:
        current_tasks().add_task(gate, "sync")
        current_tasks().add_task(after_gate, gate)
        return PlainTextResponse("ok")

    return Starlette(
        routes=[Route("/", endpoint)], middleware=[Middleware(BackgroundTasksMiddleware)]
    )


async def after_gate(gate: Gate) -> None:
    await anyio.lowlevel.checkpoint()
    gate.ran.append("async")


def client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_wait_idle_sync_waits_for_the_detached_tasks_of_a_testclient_app() -> None:
    gate = Gate()
    app = starlette_app(gate)
    with TestClient(app) as http:
        assert http.get("/").text == "ok"
        assert gate.ran == []  # the response came back before the task ran
        with pytest.raises(TimeoutError, match=r"still busy after 0.05 s: 0 .* and 1 running"):
            wait_idle_sync(http, timeout=0.05)
        gate.open.set()
        wait_idle_sync(http)
        assert gate.ran == ["sync", "async"]


@pytest.mark.anyio
async def test_wait_idle_waits_on_the_apps_loop_under_a_real_lifespan() -> None:
    gate = Gate()
    app = starlette_app(gate)
    async with lifespan(app), client(app) as http:
        await http.get("/")
        assert gate.ran == []
        with pytest.raises(TimeoutError, match=r"1 running"):
            await wait_idle(app, timeout=0.05)
        gate.open.set()
        await wait_idle(app)
        assert gate.ran == ["sync", "async"]


@pytest.mark.anyio
async def test_the_middleware_is_found_however_it_wraps_the_app() -> None:
    gate = Gate()
    gate.open.set()

    async def endpoint(request: Request) -> Response:
        current_tasks().add_task(gate, request.url.path)
        return PlainTextResponse("ok")

    inner = Starlette(routes=[Route("/{name}", endpoint)])
    wrapped = BackgroundTasksMiddleware(inner)
    outer = GZipMiddleware(wrapped)
    fastapi_app = FastAPI(middleware=[Middleware(BackgroundTasksMiddleware)])
    fastapi_app.add_api_route("/{name}", endpoint)
    cases: list[tuple[ASGIApp, object]] = [
        (wrapped, wrapped),
        (outer, outer),
        (outer, wrapped),
        (fastapi_app, fastapi_app),
    ]
    for app, target in cases:
        async with lifespan(app), client(app) as http:
            await http.get("/x")
            await wait_idle(target)
    assert gate.ran == ["/x"] * 4


def test_an_idle_waiter_holds_a_timeout_and_offers_both_forms() -> None:
    waiter = IdleWaiter(timeout=0.05)
    gate = Gate()
    app = starlette_app(gate)
    with TestClient(app) as http:
        http.get("/")
        with pytest.raises(TimeoutError, match=r"after 0.05 s"):
            waiter.sync(http)
        gate.open.set()
        waiter.timeout = 10
        waiter.sync(http, app)
    assert gate.ran == ["sync", "async"]
    assert repr(waiter) == "<IdleWaiter timeout=10>"


@pytest.mark.anyio
async def test_the_async_form_of_an_idle_waiter() -> None:
    gate = Gate()
    gate.open.set()
    app = starlette_app(gate)
    async with lifespan(app), client(app) as http:
        await http.get("/")
        await IdleWaiter()(app)
        assert gate.ran == ["sync", "async"]


# -- what goes wrong, said clearly ---------------------------------------------------------------


@pytest.mark.anyio
async def test_an_app_without_the_middleware_is_refused() -> None:
    app = Starlette()
    async with lifespan(app):
        with pytest.raises(RuntimeError, match=r"No BackgroundTasksMiddleware was found in"):
            await wait_idle(app)


@pytest.mark.anyio
async def test_an_app_not_started_is_told_to_start_its_lifespan() -> None:
    with pytest.raises(RuntimeError, match=r"has not been started.*with TestClient\(app\)"):
        await wait_idle(starlette_app(Gate()))
    bare = BackgroundTasksMiddleware(Starlette())
    with pytest.raises(RuntimeError, match=r"has no supervisor .* lifespan has not been started"):
        await wait_idle(bare)


def test_a_testclient_outside_its_block_is_told_to_use_with() -> None:
    http = TestClient(starlette_app(Gate()))
    with pytest.raises(RuntimeError, match=r"TestClient inside its `with` block"):
        wait_idle_sync(http)
    with pytest.raises(TypeError, match=r"takes a Starlette TestClient"):
        wait_idle_sync("http://test")


def test_waiting_from_another_loop_says_to_use_the_sync_form() -> None:
    gate = Gate()
    gate.open.set()
    app = starlette_app(gate)
    with TestClient(app) as http:
        http.get("/")
        with pytest.raises(RuntimeError, match=r"wait_idle_sync\(client\) instead"):
            anyio.run(wait_idle, app)
        with (
            anyio.from_thread.start_blocking_portal() as portal,
            pytest.raises(TypeError, match=r"needs the app when given a portal"),
        ):
            wait_idle_sync(portal)


def test_after_shutdown_there_is_nothing_left_to_wait_for() -> None:
    gate = Gate()
    gate.open.set()
    app = starlette_app(gate)
    with TestClient(app) as http:
        http.get("/")
    assert gate.ran == ["sync", "async"]  # drained at shutdown
    anyio.run(wait_idle, app.middleware_stack)  # a finished supervisor is idle, on any loop


# -- the lifespan helper ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_lifespan_reports_a_failed_startup() -> None:
    @asynccontextmanager
    async def fail(app: Starlette) -> AsyncIterator[None]:
        raise ValueError("no database")
        yield

    app = Starlette(lifespan=fail)
    with pytest.raises(
        RuntimeError, match=r"(?s)lifespan startup failed: .*ValueError: no database"
    ):
        async with lifespan(app):
            pytest.fail("the block must not run")


@pytest.mark.anyio
async def test_lifespan_reports_an_app_that_does_not_answer() -> None:
    async def http_only(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError(f"only http, not {scope['type']}")

    with pytest.raises(
        RuntimeError, match=r"without answering lifespan.startup: it raised"
    ) as info:
        async with lifespan(http_only):
            pytest.fail("the block must not run")
    assert isinstance(info.value.__cause__, ValueError)


@pytest.mark.anyio
async def test_lifespan_runs_startup_before_and_shutdown_after_the_block() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def app_lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = Starlette(lifespan=app_lifespan)
    async with lifespan(app):
        events.append("block")
    assert events == ["startup", "block", "shutdown"]
    with pytest.raises(AssertionError, match="the test's own failure"):
        async with lifespan(app):
            raise AssertionError("the test's own failure")
    assert events[-1] == "shutdown"
    assert len(events) == 5


@pytest.mark.anyio
async def test_lifespan_reports_an_answer_out_of_protocol() -> None:
    async def confused(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    with pytest.raises(RuntimeError, match=r"Expected lifespan.startup.complete, got 'lifespan"):
        async with lifespan(confused):
            pytest.fail("the block must not run")


@pytest.mark.anyio
async def test_lifespan_does_not_wait_for_an_app_that_failed_and_still_listens() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        await receive()  # never comes

    with anyio.fail_after(5), pytest.raises(RuntimeError, match=r"startup failed: no database"):
        async with lifespan(failing):
            pytest.fail("the block must not run")


@pytest.mark.anyio
async def test_lifespan_shuts_the_app_down_when_the_block_is_cancelled() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def app_lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await anyio.lowlevel.checkpoint()
        events.append("shutdown")

    with anyio.CancelScope() as scope:
        async with lifespan(Starlette(lifespan=app_lifespan)):
            scope.cancel()
            await anyio.sleep_forever()
    assert events == ["shutdown"]


def test_wait_idle_sync_and_run_sync_through_a_trio_testclient() -> None:
    gate = Gate()
    app = starlette_app(gate)
    with TestClient(app, backend="trio") as http:
        http.get("/")
        gate.open.set()
        wait_idle_sync(http)
        assert gate.ran == ["sync", "async"]
        with record_tasks() as recorded:
            http.get("/")
        wait_idle_sync(http)
        assert gate.ran == ["sync", "async"]  # recorded, not run
        recorded.run_sync(http)  # on the app's trio loop
        assert gate.ran == ["sync", "async"] * 2
