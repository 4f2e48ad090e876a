"""docs/observability.md: every code block runs, and does what the page says."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import afterward
import afterward.otel
from afterward import BackgroundTasks
from docs_blocks import blocks, run_blocks
from test_middleware import client, running

PAGE = "observability.md"
ROOT = Path(__file__).resolve().parent.parent


def ok() -> None: ...


def broken() -> None:
    raise ConnectionError("the mail server is down")


async def run_tasks(*funcs: object) -> list[afterward.BackgroundTask]:
    tasks = BackgroundTasks()
    handles = [tasks.add_task(func) for func in funcs]  # type: ignore[arg-type]
    await tasks()
    return handles


def test_every_block_is_labelled() -> None:
    assert list(blocks(PAGE)) == ["events", "tracker", "stats", "formatter", "install", "otel"]


@pytest.mark.anyio
async def test_the_counting_callback_counts_each_outcome() -> None:
    module = run_blocks(PAGE, "events")
    try:
        await run_tasks(ok, broken, ok)
        tasks = BackgroundTasks(stop_on_error=True)
        tasks.add_task(broken)
        tasks.add_task(ok)
        await tasks()
    finally:
        module.stop()
    assert module.finished == {"succeeded": 2, "failed": 2, "abandoned": 1}


@pytest.mark.anyio
async def test_the_tracker_callback_reports_final_failures_only() -> None:
    module = run_blocks(PAGE, "tracker")
    try:
        handles = await run_tasks(ok, afterward.task(broken, retries=1))
    finally:
        module.stop_reporting()
    failed = handles[1]
    assert module.tracker.reports == [
        (failed.exception, {"task": failed.name, "task_id": failed.id})
    ]


@pytest.mark.anyio
async def test_the_health_endpoint_shows_the_figures() -> None:
    module = run_blocks(PAGE, "stats")
    async with (
        running(module.app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=module.app), base_url="http://test"
        ) as http,
    ):
        body = (await http.get("/health")).json()
    assert set(body) == {"tasks_failed", "tasks_running", "tasks_waiting"}
    assert all(isinstance(value, int) for value in body.values())


@pytest.fixture
def afterward_handlers() -> Iterator[list[logging.Handler]]:
    """Remove the handlers a block adds to the `afterward` logger."""
    logger = logging.getLogger("afterward")
    before = list(logger.handlers)
    added: list[logging.Handler] = []
    yield added
    for handler in logger.handlers:
        if handler not in before:
            logger.removeHandler(handler)


@pytest.mark.anyio
async def test_the_formatter_prints_the_task_s_fields(
    afterward_handlers: list[logging.Handler],
) -> None:
    module = run_blocks(PAGE, "formatter")
    stream = io.StringIO()
    module.handler.setStream(stream)

    async def endpoint(request: Request) -> Response:
        tasks = BackgroundTasks()
        tasks.add_task(broken)
        tasks.add_task(ok)
        tasks.add_task(ok)
        tasks.stop_on_error = True
        return PlainTextResponse("ok", background=tasks)

    app = Starlette(routes=[Route("/", endpoint)])
    async with client(app) as http:
        await http.get("/")

    lines = [line for line in stream.getvalue().splitlines() if not line.startswith((" ", "Tr"))]
    name = f"{__name__}.broken"
    assert lines[0] == (
        f"ERROR {name} attempt=1 outcome=failed: Background task {name} failed; the remaining "
        f"tasks are skipped (stop_on_error)."
    )
    assert lines[-1] == "ConnectionError: the mail server is down"
    # The line about the two skipped tasks is not about one task: the filter keeps it out.
    assert not any("Skipping" in line for line in lines)


def test_the_install_line_names_the_extra_pyproject_declares() -> None:
    language, code = blocks(PAGE)["install"]
    assert (language, code) == ("sh", 'pip install "afterward[otel]"\n')
    # Read as text: tomllib is Python 3.11+, and afterward supports 3.10.
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '\notel = ["opentelemetry-api>=1.20"]\n' in pyproject


def test_the_instrument_block_instruments() -> None:
    try:
        run_blocks(PAGE, "otel")
        assert afterward.otel.is_instrumented()
    finally:
        afterward.otel.uninstrument()
