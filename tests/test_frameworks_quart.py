"""Quart under BackgroundTasksMiddleware (asyncio only).

Quart's own idiom for ASGI middleware is `app.asgi_app = Middleware(app.asgi_app)`, which keeps
`app` a Quart object (for `quart run` and the test client); wrapping the whole app works too.
"""

from __future__ import annotations

from typing import cast

import pytest
from examples import quart_app
from quart import Quart, abort, request
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


@pytest.fixture(params=asyncio_only("Quart runs on asyncio only"))
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def build_quart(probe: Probe) -> Quart:
    app = Quart(__name__)

    @app.before_serving
    async def startup() -> None:
        probe.app_startup()

    @app.after_serving
    async def shutdown() -> None:
        probe.app_shutdown()

    def answer(action: str) -> tuple[str, int]:
        status = probe.handle(action, request.args.get("id", ""))
        if status == 404:
            abort(404)
        return "ok", status

    @app.route("/async/<action>")
    async def async_endpoint(action: str) -> tuple[str, int]:
        return answer(action)

    @app.route("/sync/<action>")
    def sync_endpoint(action: str) -> tuple[str, int]:  # Quart runs it in a thread
        return answer(action)

    return app


class TestQuartAsgiApp(FrameworkContract, ServedByUvicorn):
    """`app.asgi_app = BackgroundTasksMiddleware(app.asgi_app)`."""

    def build(self, probe: Probe) -> ASGIApp:
        app = build_quart(probe)
        app.asgi_app = BackgroundTasksMiddleware(app.asgi_app)  # type: ignore[assignment]
        return cast(ASGIApp, app)  # Quart's own ASGI types are stricter than Starlette's

    async def test_the_example_runs_its_tasks_after_a_signup_and_not_after_a_409(
        self, afterward_log: AfterwardLog
    ) -> None:
        await check_signup_example(quart_app, afterward_log)


class TestQuartWrapped(FrameworkContract):
    """`app = BackgroundTasksMiddleware(Quart(...))`."""

    def build(self, probe: Probe) -> ASGIApp:
        return BackgroundTasksMiddleware(build_quart(probe))
