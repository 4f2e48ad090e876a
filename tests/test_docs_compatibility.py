"""docs/compatibility.md: its code block runs, and each documented difference holds.

Each section says what afterward does where Starlette differs; the tests here run the same
situation as the upstream test the section names, on afterward, and check afterward's side.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask as StarletteTask
from starlette.background import BackgroundTasks as StarletteTasks
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

import afterward
from docs_blocks import DOCS, blocks, run_blocks

PAGE = "compatibility.md"


def test_every_import_of_the_swap_table_works_and_gives_afterward_classes() -> None:
    text = (DOCS / PAGE).read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| `from ")]
    assert len(rows) == 3
    for row in rows:
        instead = row.split("|")[2].strip().strip("`")
        module, _, names = instead.removeprefix("from ").partition(" import ")
        for name in names.split(", "):
            assert hasattr(importlib.import_module(module), name), instead
    assert issubclass(afterward.BackgroundTask, StarletteTask)
    assert issubclass(afterward.BackgroundTasks, StarletteTasks)


def test_the_page_has_one_python_block() -> None:
    assert list(blocks(PAGE)) == ["stop-on-error"]


def failing_then_counting(tasks: afterward.BackgroundTasks, ran: list[str]) -> None:
    def fail() -> None:
        ran.append("first")
        raise ValueError("task failed")

    tasks.add_task(fail)
    tasks.add_task(ran.append, "second")


def app_with(tasks_factory: Any, ran: list[str], **options: Any) -> Starlette:
    async def endpoint(request: Request) -> Response:
        tasks = tasks_factory()
        failing_then_counting(tasks, ran)
        return PlainTextResponse("ok", background=tasks)

    return Starlette(routes=[Route("/", endpoint)], **options)


def test_a_failing_task_does_not_stop_the_next_one(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []
    with caplog.at_level(logging.ERROR, logger="afterward"):
        response = TestClient(app_with(afterward.BackgroundTasks, ran)).get("/")
    assert response.text == "ok"
    assert ran == ["first", "second"]
    assert "failing_then_counting.<locals>.fail failed" in caplog.text


def test_the_stop_on_error_block_stops_at_the_first_failure_and_logs_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []
    module = run_blocks(PAGE, "stop-on-error")
    assert module.tasks.stop_on_error
    with caplog.at_level(logging.ERROR, logger="afterward"):
        TestClient(app_with(lambda: module.tasks, ran)).get("/")
    assert ran == ["first"]
    assert "Skipping 1 background task(s)" in caplog.text


@pytest.mark.parametrize("stop_on_error", [False, True])
def test_a_task_error_reaches_neither_the_middleware_nor_the_test_client(
    stop_on_error: bool,
) -> None:
    seen: list[str] = []

    async def passthrough(request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        seen.append("returned")
        return response

    ran: list[str] = []
    app = app_with(
        lambda: afterward.BackgroundTasks(stop_on_error=stop_on_error),
        ran,
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=passthrough)],
    )
    with TestClient(app, raise_server_exceptions=True) as client:
        response = client.get("/")
    assert response.status_code == 200
    assert seen == ["returned"]
    assert ran == (["first"] if stop_on_error else ["first", "second"])


def test_the_apps_exception_handlers_are_not_called_for_a_task_error() -> None:
    handled: list[Exception] = []

    def handler(request: Request, exc: Exception) -> Response:
        handled.append(exc)
        return PlainTextResponse("handled", status_code=500)

    ran: list[str] = []
    app = app_with(afterward.BackgroundTasks, ran, exception_handlers={Exception: handler})
    response = TestClient(app, raise_server_exceptions=False).get("/")
    assert response.status_code == 200
    assert ran == ["first", "second"]
    assert handled == []
