"""BackgroundTasksMiddleware end to end: a real uvicorn (lifespan on), real clients and signals."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from afterward import BackgroundTasksMiddleware, current_tasks
from test_e2e_uvicorn import PAYLOAD, TIMEOUT, RecordOutcome, SlowTask
from test_e2e_uvicorn import serving as serve_with

pytestmark = pytest.mark.anyio

APPS = Path(__file__).parent / "apps"


@contextlib.asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """Run `app` on a real uvicorn with lifespan on (so the supervisor runs); yield its URL."""
    async with serve_with(app, lifespan="on") as url:
        yield url


def notification_app(slow: SlowTask) -> Starlette:
    async def send_notification(request: Request) -> Response:
        current_tasks().add_task(slow, request.path_params["email"])
        return JSONResponse({"message": "Notification sent", "payload": PAYLOAD})

    return Starlette(
        routes=[Route("/send-notification/{email}", send_notification, methods=["POST"])]
    )


class TimingMiddleware(BaseHTTPMiddleware):
    """A typical `BaseHTTPMiddleware` (timing headers, logging) above the background tasks."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["x-timed"] = "yes"
        return response


def wrapped_pure(slow: SlowTask) -> tuple[ASGIApp, RecordOutcome]:
    outcome = RecordOutcome(BackgroundTasksMiddleware(notification_app(slow)))
    return outcome, outcome


def wrapped_base_http(slow: SlowTask) -> tuple[ASGIApp, RecordOutcome]:
    # The pure ASGI recorder sits above the BaseHTTPMiddleware, so its call ends only when the
    # BaseHTTPMiddleware's does: both must return while the task still runs.
    inner = notification_app(slow)
    stack = Starlette(
        routes=inner.routes,
        middleware=[
            Middleware(TimingMiddleware),
            Middleware(BackgroundTasksMiddleware),
        ],
    )
    outcome = RecordOutcome(stack)
    return outcome, outcome


@pytest.mark.parametrize("wrap", [wrapped_pure, wrapped_base_http], ids=["pure-asgi", "base-http"])
async def test_outer_middleware_and_server_never_wait_for_the_task(
    wrap: Callable[[SlowTask], tuple[ASGIApp, RecordOutcome]],
) -> None:
    slow = SlowTask()
    app, outcome = wrap(slow)
    try:
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
            with anyio.fail_after(TIMEOUT):
                response = await client.post("/send-notification/a@example.com")
            assert response.status_code == 200
            assert response.json()["payload"] == PAYLOAD
            await slow.started.wait()
            await outcome.done.wait()  # the outermost ASGI call has returned ...
            assert not slow.finished.is_set()  # ... while the task is still running
            assert outcome.errors == []
            slow.release.set()
            await slow.finished.wait()
    finally:
        slow.release.set()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Output:
    """The lines a process prints, read in a thread; wait for a line without polling."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._process = process
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<eof>")
            self._changed.notify_all()

    def wait_for(self, count: int, text: str, timeout: float = 20) -> None:
        with self._changed:
            if not self._changed.wait_for(
                lambda: sum(text in line for line in self.lines) >= count, timeout
            ):
                raise AssertionError(f"never saw {count} x {text!r}:\n" + self.text)

    def close(self) -> None:
        """Wait for the reader to see the end of the output, and close the pipe."""
        self._thread.join(10)
        assert self._process.stdout is not None
        self._process.stdout.close()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@contextlib.contextmanager
def uvicorn_process(
    drain_timeout: float, task_seconds: float
) -> Iterator[tuple[subprocess.Popen[str], Output, str]]:
    """Start `tests/apps/draining.py` under a real `uvicorn` process on a free port."""
    port = _free_port()
    env = {
        **os.environ,
        "DRAIN_TIMEOUT": str(drain_timeout),
        "TASK_SECONDS": str(task_seconds),
        "PYTHONPATH": os.pathsep.join([str(APPS), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "draining:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--lifespan",
        "on",
        "--no-access-log",
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = Output(process)
    try:
        output.wait_for(1, "Uvicorn running on")
        yield process, output, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        output.close()


def request_work(url: str, count: int) -> None:
    with httpx.Client(base_url=url) as client:
        for n in range(count):
            assert client.get("/work", params={"n": n}).text == f"queued {n}"


def test_sigterm_drains_the_tasks_that_finish_within_the_deadline() -> None:
    with uvicorn_process(drain_timeout=8, task_seconds=0.3) as (process, output, url):
        request_work(url, 4)
        output.wait_for(2, "started slow_async")  # max_running=2: two run, two wait
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert process.wait(30) == -signal.SIGTERM
        elapsed = time.monotonic() - started
    output.wait_for(1, "<eof>")
    assert "Application shutdown complete" in output.text
    for n in range(4):
        for name in ("slow_async", "slow_sync", "quick"):
            assert f"finished {name} {n}" in output.lines, output.text
    assert "ERROR" not in output.text
    assert elapsed < 20


def test_sigterm_past_the_deadline_names_every_abandoned_task_and_exits_in_time() -> None:
    drain = 0.5
    with uvicorn_process(drain_timeout=drain, task_seconds=60) as (process, output, url):
        request_work(url, 3)
        output.wait_for(2, "started slow_async")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == -signal.SIGTERM
        elapsed = time.monotonic() - started
    output.wait_for(1, "<eof>")
    text = output.text
    assert "Application shutdown complete" in text
    assert "finished" not in text
    assert text.count("draining.slow_async was interrupted") == 2, text
    # The third request's tasks never got a running slot.
    assert "never started" in text
    assert text.count("draining.quick") >= 3, text
    assert elapsed < drain + 5, f"exit took {elapsed:.1f} s"
