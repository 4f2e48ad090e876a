"""CeleryBackend end to end: a real Redis, real `celery worker` processes, no mocks.

Select these with `-m celery`. They need a Redis server (see `apps/celery_worker.py`): without
one they skip saying how to start it, and under `AFTERWARD_REQUIRE_REDIS=1` (CI) they fail; the
RabbitMQ test likewise, under `AFTERWARD_REQUIRE_RABBITMQ=1`.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from test_e2e_uvicorn import serving

sys.path.insert(0, str(Path(__file__).resolve().parent / "apps"))

import celery_tasks
from celery_worker import (
    Session,
    Worker,
    celery_session,
    celery_worker,
    start_worker,
    take,
)

import afterward
from afterward import BackgroundTasks, BackgroundTasksMiddleware
from afterward.celery import RUN_TASK, CeleryBackend

__all__ = ["celery_session", "celery_worker"]  # the fixtures, imported for pytest to find

pytestmark = pytest.mark.celery

REQUESTS = 10
KINDS = ("record", "arecord", "flaky", "aflaky", "plain")  # sync, async, retried, registered


def backend_for(session: Session, **options: object) -> CeleryBackend:
    app = celery_tasks.make_app(session.url, prefix=session.prefix, queue=session.queue)
    return CeleryBackend(app, **options)  # type: ignore[arg-type]


def web_app(backend: CeleryBackend) -> ASGIApp:
    """Each request adds one task of each kind, with values naming the request and the kind."""

    async def endpoint(request: Request) -> Response:
        key, number = request.query_params["key"], request.path_params["number"]
        tasks = afterward.current_tasks()
        tasks.add_task(celery_tasks.record, key, f"{number}-record")
        tasks.add_task(celery_tasks.arecord, key, f"{number}-arecord")
        tasks.add_task(celery_tasks.flaky, key, f"{number}-flaky", 2)  # fails twice, then works
        tasks.add_task(celery_tasks.aflaky, key, f"{number}-aflaky")  # fails once, then works
        tasks.add_task(celery_tasks.plain, key, f"{number}-plain")
        return PlainTextResponse("queued")

    routes = [Route("/{number}", endpoint, methods=["POST"])]
    return BackgroundTasksMiddleware(Starlette(routes=routes), backend=backend)


async def expect_exactly(session: Session, backend: CeleryBackend, key: str) -> None:
    """Every request's tasks ran exactly once: all the records, and nothing else after them."""
    client = session.client()
    records = await anyio.to_thread.run_sync(take, client, key, REQUESTS * len(KINDS))
    expected = [f"{n}-{kind}" for n in range(REQUESTS) for kind in KINDS]
    assert sorted(records) == sorted(expected)
    # A last task, queued after all of them, runs after any duplicate would have.
    tasks = BackgroundTasks(backend=backend)
    tasks.add_task(celery_tasks.record, key, "last")
    await tasks()
    assert await anyio.to_thread.run_sync(take, client, key, 1) == ["last"]
    assert client.llen(key) == 0


@pytest.mark.anyio
@pytest.mark.usefixtures("celery_worker")
async def test_each_request_s_tasks_run_exactly_once_on_the_worker(celery_session: Session) -> None:
    backend = backend_for(celery_session)
    key = celery_session.key()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=web_app(backend)), base_url="http://test"
    ) as http:
        for number in range(REQUESTS):
            response = await http.post(f"/{number}", params={"key": key})
            assert response.status_code == 200
    await expect_exactly(celery_session, backend, key)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
@pytest.mark.usefixtures("celery_worker")
async def test_through_real_uvicorn_each_task_runs_exactly_once(celery_session: Session) -> None:
    backend = backend_for(celery_session)
    key = celery_session.key()
    async with serving(web_app(backend), lifespan="on") as url, httpx.AsyncClient() as http:
        responses = []
        async with anyio.create_task_group() as group:
            for number in range(REQUESTS):

                async def post(number: int = number) -> None:
                    responses.append(await http.post(f"{url}/{number}", params={"key": key}))

                group.start_soon(post)
    assert [r.status_code for r in responses] == [200] * REQUESTS
    await expect_exactly(celery_session, backend, key)


@pytest.mark.anyio
@pytest.mark.usefixtures("celery_worker")
async def test_an_async_task_s_timeout_cancels_the_attempt_and_it_is_retried(
    celery_session: Session, celery_worker: Worker
) -> None:
    key = celery_session.key()
    tasks = BackgroundTasks(backend=backend_for(celery_session))
    tasks.add_task(celery_tasks.hangs_once, key, "second attempt")
    await tasks()
    assert await anyio.to_thread.run_sync(take, celery_session.client(), key, 1) == [
        "second attempt"
    ]
    assert "celery_tasks.hangs_once failed on attempt 1 of 2 (TimeoutError" in celery_worker.log()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_a_task_whose_worker_is_killed_completes_on_a_new_worker(
    celery_session: Session, tmp_path: Path
) -> None:
    queue = f"{celery_session.queue}-kill"  # its own queue: a short visibility timeout
    app = celery_tasks.make_app(
        celery_session.url, prefix=celery_session.prefix, queue=queue, visibility=2
    )
    key = celery_session.key()
    tasks = BackgroundTasks(backend=CeleryBackend(app))
    tasks.add_task(celery_tasks.stalls_first, key, "survived")
    first = start_worker(celery_session, tmp_path / "first.log", visibility=2, queue=queue)
    second: Worker | None = None
    client = celery_session.client()
    try:
        await tasks()
        started = await anyio.to_thread.run_sync(take, client, f"{key}:started", 1)
        assert started == ["survived"]
        first.kill()  # SIGKILL in the middle of the task: the message was never acknowledged
        second = start_worker(celery_session, tmp_path / "second.log", visibility=2, queue=queue)
        assert await anyio.to_thread.run_sync(take, client, key, 1) == ["survived"]
    finally:
        first.stop()
        if second is not None:
            second.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def private_redis_port() -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    """A loopback port with no Redis yet; the test starts one there (stopped at the end)."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield free_port(), started
    finally:
        for process in started:
            process.terminate()
            process.wait(10)
            if process.stdout is not None:
                process.stdout.close()


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """Start a private redis-server on `port`; return once it accepts connections."""
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if b"Ready to accept connections" in line:
            return process
    raise AssertionError(f"redis-server did not start (exit code {process.wait()})")


@pytest.mark.anyio
async def test_with_the_broker_down_the_client_gets_a_503_and_the_log_names_the_tasks(
    celery_session: Session,
    private_redis_port: tuple[int, list[subprocess.Popen[bytes]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    port, started = private_redis_port
    app = celery_tasks.make_app(f"redis://127.0.0.1:{port}/0", prefix="down:", queue="down")
    asgi = web_app(CeleryBackend(app, queue="elsewhere"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=asgi), base_url="http://test"
    ) as http:
        with anyio.fail_after(5):
            response = await http.post("/1", params={"key": "k"})
        assert response.status_code == 503
        [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert "Could not queue 5 background task(s) on CeleryBackend" in error
        assert (
            "celery_tasks.record, celery_tasks.arecord, celery_tasks.flaky, "
            "celery_tasks.aflaky, celery_tasks.plain." in error
        )
        # The broker comes back: requests succeed again, their tasks queued.
        started.append(await anyio.to_thread.run_sync(start_redis, port))
        with anyio.fail_after(5):
            response = await http.post("/2", params={"key": "k"})
        assert response.status_code == 200
    assert redis.Redis(port=port).llen("down:elsewhere") == 5


@pytest.mark.anyio
@pytest.mark.usefixtures("celery_worker")
async def test_forged_messages_are_refused_never_imported_nor_run(
    celery_session: Session, celery_worker: Worker, tmp_path: Path
) -> None:
    key = celery_session.key()
    proof = tmp_path / "forged"
    app = celery_tasks.make_app(
        celery_session.url, prefix=celery_session.prefix, queue=celery_session.queue
    )
    forged = [
        ["os.system", "os:system", [f"touch {proof}"], {}, {}],
        ["posix.system", "posix:system", [f"touch {proof}"], {}, {}],
        ["celery_tasks.unregistered", "celery_tasks:unregistered", [key, "forged"], {}, {}],
        ["celery_sentinel.mark", "celery_sentinel:mark", [], {}, {}],
    ]
    ids = [uuid.uuid4().hex for _ in forged]
    for task_id, args in zip(ids, forged, strict=True):
        app.send_task(RUN_TASK, args=args, task_id=task_id)
    tasks = BackgroundTasks(backend=CeleryBackend(app))
    tasks.add_task(celery_tasks.record, key, "genuine")  # sent after them, run after them
    await tasks()
    client = celery_session.client()
    assert await anyio.to_thread.run_sync(take, client, key, 1) == ["genuine"]
    assert client.llen(key) == 0
    assert not proof.exists()
    assert client.get(f"{celery_session.prefix}sentinel-imported") is None  # never imported
    log = celery_worker.log()
    for task_id in ids:
        assert f"Refusing Celery message {task_id}" in log


RABBITMQ_URL = os.environ.get("AFTERWARD_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672//")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_the_same_tasks_go_through_rabbitmq(celery_session: Session, tmp_path: Path) -> None:
    parts = urlsplit(RABBITMQ_URL)
    try:
        socket.create_connection((parts.hostname, parts.port or 5672), timeout=1).close()
    except OSError:
        message = f"no RabbitMQ answers at {RABBITMQ_URL} (set AFTERWARD_TEST_RABBITMQ)"
        if os.environ.get("AFTERWARD_REQUIRE_RABBITMQ") == "1":  # CI: .ci/run starts one
            pytest.fail(f"AFTERWARD_REQUIRE_RABBITMQ=1, but {message}", pytrace=False)
        pytest.skip(message)
    queue = f"{celery_session.queue}-amqp"
    app = celery_tasks.make_app(RABBITMQ_URL, prefix=celery_session.prefix, queue=queue)
    key = celery_session.key()
    worker = start_worker(celery_session, tmp_path / "amqp.log", queue=queue, broker=RABBITMQ_URL)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=web_app(CeleryBackend(app))), base_url="http://t"
        ) as http:
            response = await http.post("/0", params={"key": key})
        assert response.status_code == 200
        records = await anyio.to_thread.run_sync(take, celery_session.client(), key, len(KINDS))
        assert sorted(records) == sorted(f"0-{kind}" for kind in KINDS)
        worker.kill()  # its work is done, and a warm shutdown on amqp takes seconds
    finally:
        worker.stop()
