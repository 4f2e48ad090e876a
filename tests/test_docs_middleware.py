"""docs/middleware.md: its example app runs detached, and the log lines it quotes are real."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from afterward import BackgroundTasksMiddleware, current_tasks
from docs_blocks import blocks, run_blocks
from test_middleware import client, running

PAGE = "middleware.md"
pytestmark = pytest.mark.anyio


def test_every_block_of_the_page_is_checked_here() -> None:
    assert list(blocks(PAGE)) == ["install", "not-run-log", "overflow-log", "drain-log"]


async def test_the_example_app_writes_the_notification_after_the_response(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    example = run_blocks(PAGE, "install", name="docs_middleware")
    app = example.app
    async with running(app), client(app) as http:
        response = await http.post("/send-notification/a@example.com")
        assert response.json() == {"message": "Notification sent in the background"}
        with anyio.fail_after(5):
            await app.supervisor.wait_idle()
    assert (tmp_path / "log.txt").read_text() == "notification for a@example.com: some notification"


async def test_the_quoted_not_run_line_is_the_one_logged(caplog: pytest.LogCaptureFixture) -> None:
    (_, quoted) = blocks(PAGE)["not-run-log"]
    caplog.set_level(logging.INFO, logger="afterward")

    async def endpoint(request: Request) -> Response:
        current_tasks().add_task(print, "welcome")
        return PlainTextResponse("missing", status_code=404)

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]))
    async with running(app), client(app) as http:
        await http.get("/")
    logged = [r.getMessage() for r in caplog.records if "Not running" in r.getMessage()]
    assert logged == [quoted.strip().replace("app.emails.send_welcome", "builtins.print")]
