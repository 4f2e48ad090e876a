"""FastAPI under BackgroundTasksMiddleware: wrapped, `add_middleware`, and `Middleware(...)`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from examples import fastapi_middleware
from fastapi import FastAPI, HTTPException
from fastapi.responses import PlainTextResponse
from starlette.middleware import Middleware
from starlette.types import ASGIApp

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


def fastapi_app(probe: Probe, middleware: list[Middleware] | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        probe.app_startup()
        yield
        probe.app_shutdown()

    app = FastAPI(lifespan=lifespan, middleware=middleware)

    def answer(action: str, id: str) -> PlainTextResponse:
        status = probe.handle(action, id)
        if status == 404:
            raise HTTPException(404)
        return PlainTextResponse("ok", status_code=status)

    @app.get("/async/{action}")
    async def async_endpoint(action: str, id: str = "") -> PlainTextResponse:
        return answer(action, id)

    @app.get("/sync/{action}")
    def sync_endpoint(action: str, id: str = "") -> PlainTextResponse:  # run in a thread
        return answer(action, id)

    return app


class TestFastAPIWrapped(FrameworkContract, ServedByUvicorn):
    """`app = BackgroundTasksMiddleware(FastAPI(...))`."""

    def build(self, probe: Probe) -> ASGIApp:
        return BackgroundTasksMiddleware(fastapi_app(probe))

    async def test_the_example_runs_its_tasks_after_a_signup_and_not_after_a_409(
        self, afterward_log: AfterwardLog
    ) -> None:
        await check_signup_example(fastapi_middleware, afterward_log)


class TestFastAPIAddMiddleware(FrameworkContract):
    """`app.add_middleware(BackgroundTasksMiddleware, ...)`."""

    def build(self, probe: Probe) -> ASGIApp:
        app = fastapi_app(probe)
        app.add_middleware(BackgroundTasksMiddleware, drain_timeout=5.0)
        return app


class TestFastAPIMiddlewareList(FrameworkContract):
    """`FastAPI(middleware=[Middleware(BackgroundTasksMiddleware, ...)])`."""

    def build(self, probe: Probe) -> ASGIApp:
        return fastapi_app(probe, [Middleware(BackgroundTasksMiddleware, workers=4)])
