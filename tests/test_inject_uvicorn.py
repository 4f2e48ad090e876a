"""`inject` through a real uvicorn: a client that leaves mid-stream gets no tasks run.

uvicorn announces ASGI spec 2.3, so Starlette's `StreamingResponse` stops on `http.disconnect`
and returns normally, without the final body message. The tasks must then be logged by name, not
run: they run only once the final body message has gone out.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator

import anyio
import anyio.to_thread
import pytest
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route

from afterward import BackgroundTasks, inject
from test_e2e_uvicorn import TIMEOUT, RecordOutcome, Signal, serving

pytestmark = pytest.mark.anyio


def never_run() -> None:  # pragma: no cover - the test fails if it runs
    raise AssertionError("a task ran although the client left mid-stream")


def leave_mid_stream(url: str) -> None:
    """Ask for the stream as a raw HTTP client, read its first chunk, then hang up."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as client:
        client.sendall(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        received = b""
        while b"first" not in received:
            chunk = client.recv(65536)
            assert chunk, "the server closed the connection before the first chunk"
            received += chunk


async def test_tasks_of_a_stream_the_client_left_are_logged_not_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first_sent = Signal()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first"
        first_sent.set()
        # The client hangs up now; Starlette stops the stream when uvicorn reports it.
        await anyio.sleep_forever()
        yield b"never"  # pragma: no cover

    async def stream(tasks: BackgroundTasks) -> StreamingResponse:
        tasks.add_task(never_run)
        return StreamingResponse(chunks())

    app = RecordOutcome(Starlette(routes=[Route("/stream", inject(stream))]))
    with caplog.at_level(logging.INFO, "afterward"):
        async with serving(app) as url:
            await anyio.to_thread.run_sync(leave_mid_stream, url)
            await first_sent.wait()
            await app.done.wait()
    assert app.errors == []
    assert any(
        "not completed" in record.getMessage() and "never_run" in record.getMessage()
        for record in caplog.records
    ), [record.getMessage() for record in caplog.records]
