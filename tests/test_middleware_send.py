"""The `send` the middleware hands the app, once the request's ASGI call has returned.

The middleware lets go of the server's `send` when the call ends: a slot kept alive by the
request's context must not keep the server's per-request objects alive too (under uvicorn that
made the garbage collector run 20 to 30 times as often). A late send is refused loudly.
"""

from __future__ import annotations

import gc
import re
import weakref

import pytest
from starlette.types import Message, Receive, Scope, Send

from afterward import BackgroundTasksMiddleware

pytestmark = pytest.mark.anyio

SCOPE: Scope = {"type": "http", "method": "GET", "path": "/", "headers": []}


class ServerSend:
    """A server's `send`: an object of its own, so the test can tell when it is let go."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def test_the_middleware_lets_go_of_the_servers_send_when_the_call_returns() -> None:
    kept: list[Send] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kept.append(send)  # the app keeps what it was given, past the end of the call
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    server_send = ServerSend()
    await BackgroundTasksMiddleware(app)(dict(SCOPE), receive, server_send)
    assert [m["type"] for m in server_send.messages] == [
        "http.response.start",
        "http.response.body",
    ]
    gone = weakref.ref(server_send)
    del server_send
    gc.collect()
    assert gone() is None  # the middleware's send, still kept by the app, holds it no more
    assert len(kept) == 1


async def test_a_send_after_the_call_returned_raises_naming_the_message() -> None:
    kept: list[Send] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kept.append(send)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    server_send = ServerSend()
    await BackgroundTasksMiddleware(app)(dict(SCOPE), receive, server_send)
    late = re.escape("'http.response.body' after its ASGI call had returned")
    with pytest.raises(RuntimeError, match=late):
        await kept[0]({"type": "http.response.body", "body": b"late"})
    assert len(server_send.messages) == 2
