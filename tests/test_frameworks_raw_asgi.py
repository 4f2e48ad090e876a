"""A raw ASGI app under BackgroundTasksMiddleware: one that speaks lifespan, one that refuses it."""

from __future__ import annotations

from functools import partial
from urllib.parse import parse_qs

import anyio
import anyio.to_thread
import pytest
from examples import raw_asgi_app
from starlette.types import ASGIApp, Receive, Scope, Send

from _frameworks import (
    BOTH_BACKENDS,
    AfterwardLog,
    FrameworkContract,
    Probe,
    ServedByUvicorn,
    check_signup_example,
)
from afterward import BackgroundTasksMiddleware

pytestmark = pytest.mark.anyio


@pytest.fixture(params=BOTH_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def raw_app(probe: Probe, *, lifespan: bool) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and lifespan:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    probe.app_startup()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    probe.app_shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            raise ValueError(f"This app only speaks HTTP, not {scope['type']!r}.")
        _, kind, action = scope["path"].split("/")
        query = parse_qs(scope["query_string"].decode())
        handle = partial(probe.handle, action, query.get("id", [""])[0])
        if kind == "sync":  # current_tasks() from a worker thread
            status = await anyio.to_thread.run_sync(handle)
        else:
            status = handle()
        body = b"ok" if status < 400 else b"no"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


class TestRawAsgiWithLifespan(FrameworkContract, ServedByUvicorn):
    """A raw app that speaks lifespan: its own startup and shutdown run around the supervisor."""

    def build(self, probe: Probe) -> ASGIApp:
        return BackgroundTasksMiddleware(raw_app(probe, lifespan=True))

    async def test_the_example_runs_its_tasks_after_a_signup_and_not_after_a_409(
        self, afterward_log: AfterwardLog
    ) -> None:
        await check_signup_example(raw_asgi_app, afterward_log)


class TestRawAsgiWithoutLifespan(FrameworkContract):
    """A raw app that raises on lifespan: the middleware answers the server itself."""

    lifespan_events = ["task done"]  # noqa: RUF012 - the base class declares it a ClassVar

    def build(self, probe: Probe) -> ASGIApp:
        return BackgroundTasksMiddleware(raw_app(probe, lifespan=False))
