"""Starlette under BackgroundTasksMiddleware: wrapped, and as `Middleware(...)` in the app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from examples import starlette_middleware
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
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


def starlette_app(probe: Probe, middleware: list[Middleware] | None = None) -> Starlette:
    def answer(request: Request) -> Response:
        status = probe.handle(request.path_params["action"], request.query_params.get("id", ""))
        if status == 404:
            raise HTTPException(404)
        return PlainTextResponse("ok", status_code=status)

    async def async_endpoint(request: Request) -> Response:
        return answer(request)

    def sync_endpoint(request: Request) -> Response:  # Starlette runs it in a thread
        return answer(request)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        probe.app_startup()
        yield
        probe.app_shutdown()

    return Starlette(
        routes=[Route("/async/{action}", async_endpoint), Route("/sync/{action}", sync_endpoint)],
        middleware=middleware,
        lifespan=lifespan,
    )


class TestStarletteWrapped(FrameworkContract, ServedByUvicorn):
    """`app = BackgroundTasksMiddleware(Starlette(...))`."""

    def build(self, probe: Probe) -> ASGIApp:
        return BackgroundTasksMiddleware(starlette_app(probe))

    async def test_the_example_runs_its_tasks_after_a_signup_and_not_after_a_409(
        self, afterward_log: AfterwardLog
    ) -> None:
        await check_signup_example(starlette_middleware, afterward_log)


class TestStarletteMiddlewareList(FrameworkContract):
    """`Starlette(middleware=[Middleware(BackgroundTasksMiddleware, ...)])`."""

    def build(self, probe: Probe) -> ASGIApp:
        return starlette_app(probe, [Middleware(BackgroundTasksMiddleware, drain_timeout=5.0)])
