"""End to end, through a real uvicorn server on a loopback port and a real HTTP client.

The server runs in a thread with its own asyncio loop; the client runs on the test's AnyIO backend
(asyncio or trio). Tasks on the server tell the test what they are doing through `Signal`s, so
every wait is on an event, never on a sleep.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from afterward import BackgroundTasks, inject

pytestmark = pytest.mark.anyio

TIMEOUT = 5
PAYLOAD = "x" * 200_000  # larger than a socket buffer: the body goes out in several writes


class Signal:
    """A flag set from any thread (a task on the server) and awaited on the test's loop."""

    def __init__(self) -> None:
        self._token = anyio.lowlevel.current_token()
        self._event = anyio.Event()
        self._flag = threading.Event()

    def set(self) -> None:
        self._flag.set()
        anyio.from_thread.run_sync(self._event.set, token=self._token)

    def is_set(self) -> bool:
        return self._flag.is_set()

    async def wait(self) -> None:
        with anyio.fail_after(TIMEOUT):
            await self._event.wait()


class SlowTask:
    """A sync task that blocks its worker thread until the test releases it."""

    def __init__(self) -> None:
        self.started = Signal()
        self.finished = Signal()
        self.release = threading.Event()
        self.arguments: list[str] = []

    def __call__(self, argument: str) -> None:
        self.arguments.append(argument)
        self.started.set()
        if not self.release.wait(TIMEOUT):
            raise TimeoutError("the test never released the slow task")
        self.finished.set()


class RecordOutcome:
    """ASGI middleware: remember how each call of the app ended, as the server would see it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.errors: list[BaseException] = []
        self.calls_done = 0
        self.done = Signal()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # pragma: no cover - lifespan is off
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            self.errors.append(exc)
            raise
        finally:
            self.calls_done += 1
            await anyio.to_thread.run_sync(self.done.set)


class _Server(uvicorn.Server):
    """A uvicorn server that says when its startup is over."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_over = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.startup_over.set()


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, *, lifespan: Literal["on", "off"] = "off") -> AsyncIterator[str]:
    """Run `app` on a real uvicorn on a free loopback port; yield its base URL.

    Args:
        app: The app to serve.
        lifespan: uvicorn's `lifespan` setting: "off" (inline tasks), or "on" for the middleware's
            supervisor.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    config = uvicorn.Config(
        app,
        loop="asyncio",
        http="h11",
        ws="none",
        lifespan=lifespan,
        log_config=None,  # keep pytest's logging (and caplog) as it is
        access_log=False,
        timeout_graceful_shutdown=TIMEOUT,
    )
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert await anyio.to_thread.run_sync(server.startup_over.wait, TIMEOUT)
        assert server.started
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await anyio.to_thread.run_sync(thread.join, TIMEOUT)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not shut down"


def plain_starlette_app(slow: SlowTask) -> Starlette:
    async def send_notification(request: Request) -> Response:
        tasks = BackgroundTasks()
        tasks.add_task(slow, request.path_params["email"])
        return JSONResponse({"message": "Notification sent", "payload": PAYLOAD}, background=tasks)

    return Starlette(
        routes=[Route("/send-notification/{email}", send_notification, methods=["POST"])]
    )


def inject_app(slow: SlowTask) -> Starlette:
    async def send_notification(email: str, background_tasks: BackgroundTasks) -> dict[str, str]:
        background_tasks.add_task(slow, email)
        return {"message": "Notification sent", "payload": PAYLOAD}

    return Starlette(
        routes=[Route("/send-notification/{email}", inject(send_notification), methods=["POST"])]
    )


@pytest.mark.parametrize("make_app", [plain_starlette_app, inject_app], ids=["starlette", "inject"])
async def test_client_has_the_complete_response_while_a_slow_task_is_still_running(
    make_app: Callable[[SlowTask], Starlette],
) -> None:
    slow = SlowTask()
    try:
        async with (
            serving(make_app(slow)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            # Were the task run before the body went out, this would wait for the release that
            # only comes below, and time out.
            with anyio.fail_after(TIMEOUT):
                response = await client.post("/send-notification/a@example.com")
            assert response.status_code == 200
            assert response.json() == {"message": "Notification sent", "payload": PAYLOAD}
            assert len(response.content) == int(response.headers["content-length"])

            await slow.started.wait()
            assert slow.arguments == ["a@example.com"]
            assert not slow.finished.is_set()  # complete response in hand, task still running

            slow.release.set()
            await slow.finished.wait()
    finally:
        slow.release.set()  # never leave the server's thread blocked


def fail() -> None:
    raise RuntimeError("the task failed")


async def test_failing_task_never_reaches_uvicorn_and_the_connection_is_kept_alive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    after_failure = Signal()
    ports: list[Any] = []

    async def endpoint(request: Request) -> Response:
        assert request.client is not None
        ports.append(request.client.port)
        tasks = BackgroundTasks()
        tasks.add_task(fail)
        tasks.add_task(after_failure.set)
        return JSONResponse({"status": "queued"}, background=tasks)

    async def ping(request: Request) -> Response:
        assert request.client is not None
        ports.append(request.client.port)
        return JSONResponse({"status": "alive"})

    app = RecordOutcome(Starlette(routes=[Route("/fail", endpoint), Route("/ping", ping)]))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        with anyio.fail_after(TIMEOUT):
            first = await client.get("/fail")
        assert first.status_code == 200
        assert first.json() == {"status": "queued"}
        await after_failure.wait()  # the task after the failing one ran
        await app.done.wait()  # and the request's ASGI call is over
        assert app.errors == []

        with anyio.fail_after(TIMEOUT):
            second = await client.get("/ping")
        assert second.status_code == 200
        assert second.json() == {"status": "alive"}
    first_port, second_port = ports
    assert first_port == second_port  # the same keep-alive connection served both requests

    assert "Exception in ASGI application" not in caplog.text
    assert [r for r in caplog.records if r.name.startswith("uvicorn")] == []
    (failure,) = [r for r in caplog.records if r.name == "afterward"]
    assert failure.levelno == logging.ERROR
    assert f"{__name__}.fail failed" in failure.getMessage()
    assert failure.exc_info is not None
    assert str(failure.exc_info[1]) == "the task failed"
