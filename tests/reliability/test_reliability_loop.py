"""Detached tasks on an event loop that AnyIO did not start (as under uvicorn, gunicorn, hypercorn).

The pytest AnyIO plugin runs tests under `anyio.run`, which tells sniffio (and so AnyIO) which
loop it is on everywhere, callbacks included. A server runs `asyncio.run` (or uvloop's) instead:
there, code called back by the loop (not in a task) cannot ask AnyIO for anything unless afterward
says which loop it is. Found by the load test: a sync task followed by an async task was lost.
"""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message

from afterward import BackgroundTasksMiddleware, current_tasks


def test_an_async_task_after_a_sync_one_runs_on_a_loop_anyio_did_not_start() -> None:
    ran: list[str] = []

    async def main() -> None:
        done = asyncio.Event()

        def sync_task() -> None:
            ran.append("sync")

        async def async_task() -> None:
            ran.append("async")
            done.set()

        async def endpoint(request: Request) -> Response:
            current_tasks().add_task(sync_task)
            current_tasks().add_task(async_task)
            return PlainTextResponse("ok")

        app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]))
        lifespan_in: asyncio.Queue[Message] = asyncio.Queue()
        lifespan_out: asyncio.Queue[Message] = asyncio.Queue()
        lifespan = asyncio.ensure_future(
            app({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan_in.get, lifespan_out.put)
        )
        await lifespan_in.put({"type": "lifespan.startup"})
        assert (await lifespan_out.get())["type"] == "lifespan.startup.complete"

        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"",
            "root_path": "", "headers": [], "client": ("127.0.0.1", 1), "server": ("t", 80),
        }  # fmt: skip
        await app(scope, receive, send)
        assert sent[0]["status"] == 200
        await asyncio.wait_for(done.wait(), 5)
        await lifespan_in.put({"type": "lifespan.shutdown"})
        assert (await lifespan_out.get())["type"] == "lifespan.shutdown.complete"
        await lifespan

    asyncio.run(main())
    assert ran == ["sync", "async"]
