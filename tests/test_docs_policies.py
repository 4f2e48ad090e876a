"""docs/policies.md: its examples run, and the log lines it quotes are the ones logged."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

import afterward
from afterward import BackgroundTasks, BackgroundTasksMiddleware, Task, TaskPolicy, task
from docs_blocks import blocks, run_blocks

PAGE = "policies.md"


def test_every_block_of_the_page_is_checked_here() -> None:
    assert list(blocks(PAGE)) == ["decorate", "retry-log", "handle", "concurrency"]


@pytest.mark.anyio
async def test_the_decorated_task_and_the_always_task_run_with_their_policies(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = run_blocks(PAGE, "decorate", name="docs_policies")
    assert isinstance(example.notify, Task)
    assert example.notify.policy == TaskPolicy(
        name="docs_policies.notify", retries=3, backoff=0.5, timeout=10
    )
    posted: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        posted.append(request.content)
        return httpx.Response(200)

    real_client = httpx.AsyncClient
    example.httpx = type(  # type: ignore[attr-defined]
        "httpx", (), {"AsyncClient": lambda: real_client(transport=httpx.MockTransport(answer))}
    )
    tasks = BackgroundTasks()
    assert await example.on_signup(7, tasks) == {"user": 7}
    notify, audit = tasks.tasks
    assert isinstance(notify, afterward.BackgroundTask)
    assert notify.func is example.notify.func
    assert isinstance(audit, afterward.BackgroundTask)
    assert audit.policy is not None
    assert audit.policy.always
    await tasks()
    assert posted == [b'{"event":"signup"}']
    assert capsys.readouterr().out == "audit: user 7 did signup\n"


@pytest.mark.anyio
async def test_the_quoted_retry_lines_are_the_ones_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    (_, quoted) = blocks(PAGE)["retry-log"]

    async def no_wait(delay: float) -> None:
        pass

    monkeypatch.setattr("afterward._attempt.anyio.sleep", no_wait)
    calls = []

    async def notify() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise httpx.ConnectError("connection refused")

    tasks = BackgroundTasks()
    tasks.add_task(task(notify, name="app.notify", retries=3, backoff=0.5))
    await tasks()
    logged = [
        f"WARNING afterward: {r.getMessage()}" for r in caplog.records if r.name == "afterward"
    ]
    delays = re.compile(r"retrying in [\d.]+ s")
    assert [delays.sub("retrying in X s", line) for line in logged] == [
        delays.sub("retrying in X s", line) for line in quoted.strip().splitlines()
    ]
    waits = [float(m) for m in re.findall(r"retrying in ([\d.]+) s", "\n".join(logged))]
    assert 0.25 <= waits[0] <= 0.5
    assert 0.5 <= waits[1] <= 1.0


def test_the_handle_example_prints_the_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    run_blocks(PAGE, "handle", name="docs_policies_handle")
    hello, outcome = capsys.readouterr().out.splitlines()
    assert hello == "hello"
    status, attempts, duration = outcome.split()
    assert (status, attempts) == ("succeeded", "1")
    assert float(duration) >= 0


@pytest.mark.anyio
async def test_the_concurrency_example_builds_concurrent_collectors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = run_blocks(PAGE, "concurrency", name="docs_policies_concurrency")
    tasks: Any = example.concurrent_collector()
    assert tasks.concurrency == 4
    await example.warm_caches(tasks)
    await tasks()
    assert sorted(capsys.readouterr().out.splitlines()) == [
        "warming ap",
        "warming eu",
        "warming us",
    ]
    middleware = example.with_middleware(Starlette())
    assert isinstance(middleware, BackgroundTasksMiddleware)
    assert middleware.collector is example.concurrent_collector


def test_the_page_is_in_the_nav() -> None:
    from test_docs_site import nav_pages

    assert PAGE in nav_pages()
