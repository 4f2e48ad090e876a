"""Litestar under BackgroundTasksMiddleware (asyncio only).

Litestar's own `middleware=[...]` list only sees HTTP and websocket scopes, never the lifespan:
there the middleware would have no supervisor and would run tasks inline. So the app is wrapped
from outside, which is what the example and docs/frameworks.md show.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar, MediaType, Request, Response, get
from litestar.exceptions import NotFoundException
from starlette.types import ASGIApp

from _frameworks import (
    AfterwardLog,
    FrameworkContract,
    Probe,
    ServedByUvicorn,
    asyncio_only,
    check_signup_example,
)
from afterward import BackgroundTasksMiddleware

pytestmark = pytest.mark.anyio


@pytest.fixture(params=asyncio_only("Litestar runs on asyncio only"))
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def build_litestar(probe: Probe) -> Litestar:
    # Parameters are read from the request: the inferred-parameter style warns in Litestar 2.25
    # and the explicit one (FromPath, FromQuery) does not exist in earlier releases.
    def answer(request: Request[Any, Any, Any]) -> Response[str]:
        action = request.path_params["action"]
        status = probe.handle(action, request.query_params.get("id", ""))
        if status == 404:
            raise NotFoundException()
        return Response("ok", status_code=status, media_type=MediaType.TEXT)

    @get("/async/{action:str}")
    async def async_endpoint(request: Request[Any, Any, Any]) -> Response[str]:
        return answer(request)

    @get("/sync/{action:str}", sync_to_thread=True)
    def sync_endpoint(request: Request[Any, Any, Any]) -> Response[str]:
        return answer(request)

    return Litestar(
        [async_endpoint, sync_endpoint],
        on_startup=[probe.app_startup],
        on_shutdown=[probe.app_shutdown],
    )


class TestLitestar(FrameworkContract, ServedByUvicorn):
    """`app = BackgroundTasksMiddleware(Litestar(...))`."""

    @pytest.fixture(autouse=True)
    def _keep_the_root_logger(self) -> Iterator[None]:
        # Building a Litestar app applies its default logging config: the root logger gets
        # level INFO and Litestar's handler. Put it back for the tests that run after these.
        root = logging.getLogger()
        level, handlers = root.level, root.handlers[:]
        try:
            yield
        finally:
            root.setLevel(level)
            root.handlers[:] = handlers

    def build(self, probe: Probe) -> ASGIApp:
        # The ignore: the middleware's parameter is Starlette's ASGIApp, which Litestar's stricter
        # ASGI types do not match under mypy (reported; at run time any ASGI app works).
        return BackgroundTasksMiddleware(build_litestar(probe))

    async def test_the_example_runs_its_tasks_after_a_signup_and_not_after_a_409(
        self, afterward_log: AfterwardLog
    ) -> None:
        # Imported here, not at collection: building a Litestar app configures logging.
        from examples import litestar_app

        await check_signup_example(litestar_app, afterward_log)
