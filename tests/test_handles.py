"""Handles: `add_task` returns the entry, whose status, timings and `wait()` follow every path."""

from __future__ import annotations

import itertools
import math
import threading
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from afterward import (
    BackgroundTask,
    BackgroundTasks,
    BackgroundTasksMiddleware,
    current_tasks,
    inject,
)
from afterward.fastapi import BackgroundTasks as DropIn
from test_middleware import Stuck, client, running

pytestmark = pytest.mark.anyio


def noop() -> None: ...


async def anoop() -> None: ...


def fail() -> None:
    raise ValueError("boom")


def test_a_handle_nobody_looks_at_keeps_its_class_defaults() -> None:
    entry = BackgroundTasks().add_task(noop)
    # Nothing was made for it: no id, no waiter (the slot for one is None), no status written.
    assert {"_id", "status", "_status", "exception", "started_at"}.isdisjoint(vars(entry))
    assert entry._waiter is None
    assert (entry.status, entry.attempts, entry.exception) == ("pending", 0, None)
    assert (entry.started_at, entry.finished_at, entry.policy) == (None, None, None)
    assert entry.queued_at > 0
    assert not entry.done


def test_ids_are_unique_strings_made_on_first_read() -> None:
    tasks = BackgroundTasks()
    first, second = tasks.add_task(noop), tasks.add_task(noop)
    assert isinstance(first.id, str)
    assert first.id == first.id
    assert first.id != second.id


def test_a_forked_process_makes_ids_of_its_own() -> None:
    from afterward import _handle

    before = BackgroundTasks().add_task(noop).id
    _handle._new_prefix()  # what `os.register_at_fork` runs in a child
    after = BackgroundTasks().add_task(noop).id
    assert len(before) == len(after) == 32
    assert before[:20] != after[:20]
    assert after.endswith("1")


async def test_inline_statuses_and_timings_of_sync_and_async_tasks() -> None:
    seen: list[str] = []
    tasks = BackgroundTasks()
    handles: list[BackgroundTask] = []

    def look() -> None:
        seen.append(handles[0].status)

    handles.append(tasks.add_task(look))
    handles.append(tasks.add_task(anoop))
    handles.append(tasks.add_task(fail))
    await tasks()
    assert seen == ["running"]
    assert [h.status for h in handles] == ["succeeded", "succeeded", "failed"]
    assert isinstance(handles[2].exception, ValueError)
    for handle in handles:
        assert handle.attempts == 1
        assert handle.started_at is not None
        assert handle.finished_at is not None
        assert handle.queued_at <= handle.started_at <= handle.finished_at
        await handle.wait()  # already done: returns at once


async def test_wait_returns_when_a_task_ends_in_a_worker_thread() -> None:
    started, release = threading.Event(), threading.Event()

    def blocks() -> None:
        started.set()
        release.wait(5)

    tasks = BackgroundTasks()
    handle = tasks.add_task(blocks)
    async with anyio.create_task_group() as group:
        group.start_soon(tasks)
        with anyio.fail_after(5):
            await anyio.to_thread.run_sync(started.wait, 5)
            assert handle.status == "running"
            release.set()
            await handle.wait()
    assert handle.status == "succeeded"


async def test_stop_on_error_abandons_the_rest() -> None:
    tasks = BackgroundTasks(stop_on_error=True)
    failing, skipped = tasks.add_task(fail), tasks.add_task(anoop)
    await tasks()
    assert (failing.status, skipped.status) == ("failed", "abandoned")
    await skipped.wait()


async def test_a_cancelled_run_cancels_the_running_task_and_abandons_the_rest() -> None:
    started = anyio.Event()

    async def hangs() -> None:
        started.set()
        await anyio.sleep_forever()

    tasks = BackgroundTasks()
    running_one, never = tasks.add_task(hangs), tasks.add_task(noop)
    async with anyio.create_task_group() as group:
        group.start_soon(tasks)
        with anyio.fail_after(5):
            await started.wait()
        group.cancel_scope.cancel()
    assert (running_one.status, never.status) == ("cancelled", "abandoned")
    assert running_one.finished_at is not None


async def test_a_lone_task_as_a_responses_background_gets_its_status() -> None:
    entry = BackgroundTask(fail)
    await entry()
    assert entry.status == "failed"


async def test_inject_abandons_the_tasks_of_an_endpoint_that_raised() -> None:
    handles: list[BackgroundTask] = []

    async def endpoint(tasks: BackgroundTasks) -> dict[str, str]:
        handles.append(tasks.add_task(noop))
        raise RuntimeError("boom")

    async def fine(tasks: BackgroundTasks) -> dict[str, str]:
        handles.append(tasks.add_task(anoop))
        return {}

    app = Starlette(routes=[Route("/", inject(endpoint)), Route("/fine", inject(fine))])
    async with client(app) as http:
        with pytest.raises(RuntimeError):
            await http.get("/")
        await http.get("/fine")
    assert [h.status for h in handles] == ["abandoned", "succeeded"]


async def test_the_fastapi_drop_in_returns_handles() -> None:
    handles: list[Any] = []
    app = FastAPI()

    @app.get("/")
    async def endpoint(background_tasks: DropIn) -> dict[str, str]:
        handles.append(background_tasks.add_task(noop))
        return {}

    @app.get("/boom")
    async def boom(background_tasks: DropIn) -> dict[str, str]:
        handles.append(background_tasks.add_task(noop))
        raise RuntimeError("boom")

    async with client(app) as http:
        await http.get("/")
        with pytest.raises(RuntimeError):
            await http.get("/boom")
    assert [h.status for h in handles] == ["succeeded", "abandoned"]


async def test_detached_statuses_and_wait_for_worker_threads_and_the_loop() -> None:
    handles: list[BackgroundTask] = []

    async def endpoint(request: Request) -> Response:
        tasks = current_tasks()
        handles.extend([tasks.add_task(noop), tasks.add_task(fail), tasks.add_task(anoop)])
        handles.append(tasks.add_task(noop))  # a second run of sync tasks, after the loop's
        status = int(request.query_params.get("status", 200))
        return PlainTextResponse("ok", status_code=status)

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]))
    async with running(app), client(app) as http:
        await http.get("/")
        with anyio.fail_after(5):
            for handle in handles:
                await handle.wait()
        await http.get("/?status=500")
    assert [h.status for h in handles] == ["succeeded", "failed", "succeeded", "succeeded"] + [
        "abandoned"
    ] * 4


async def test_at_the_drain_deadline_tasks_are_cancelled_or_abandoned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stuck = Stuck()
    handles: dict[str, BackgroundTask] = {}

    async def endpoint(request: Request) -> Response:
        tasks = current_tasks()
        kind = request.query_params["kind"]
        handles[kind] = tasks.add_task(stuck.hangs if kind == "async" else stuck.blocks)
        handles[f"{kind} after"] = tasks.add_task(noop)
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]), drain_timeout=0.05)
    try:
        async with running(app), client(app) as http:
            await http.get("/?kind=async")
            await http.get("/?kind=sync")
            with anyio.fail_after(5):
                await stuck.started.wait()
                await anyio.to_thread.run_sync(stuck.thread_started.wait)
        assert handles["async"].status == "cancelled"
        assert handles["async after"].status == "abandoned"
        assert handles["sync after"].status == "abandoned"
        # A thread cannot be stopped: the task still runs, and ends as it ends.
        assert handles["sync"].status == "running"
        (still,) = [r for r in caplog.records if "still running" in r.getMessage()]
        assert getattr(still, "afterward_task_id", None) == handles["sync"].id
    finally:
        stuck.release.set()
    with anyio.fail_after(5):
        await handles["sync"].wait()
    assert handles["sync"].status in {"succeeded"}  # (mypy narrowed it to "running")


async def test_sync_tasks_still_queued_at_the_drain_deadline_are_abandoned() -> None:
    stuck = Stuck()
    handles: list[BackgroundTask] = []

    async def endpoint(request: Request) -> Response:
        task = stuck.blocks if request.query_params.get("block") else noop
        handles.append(current_tasks().add_task(task))
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(
        Starlette(routes=[Route("/", endpoint)]), workers=1, drain_timeout=0.05
    )
    try:
        async with running(app), client(app) as http:
            await http.get("/?block=1")
            with anyio.fail_after(5):
                await anyio.to_thread.run_sync(stuck.thread_started.wait, 5)
            await http.get("/")
        assert handles[1].status == "abandoned"
    finally:
        stuck.release.set()


async def test_detached_stop_on_error_abandons_the_rest_of_the_request() -> None:
    handles: list[BackgroundTask] = []

    async def endpoint(request: Request) -> Response:
        tasks = current_tasks()
        handles.extend([tasks.add_task(noop), tasks.add_task(fail), tasks.add_task(anoop)])
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(
        Starlette(routes=[Route("/", endpoint)]),
        collector=lambda: BackgroundTasks(stop_on_error=True),
    )
    async with running(app), client(app) as http:
        await http.get("/")
        with anyio.fail_after(5):
            await handles[2].wait()
    assert [h.status for h in handles] == ["succeeded", "failed", "abandoned"]


async def test_consecutive_async_tasks_share_the_instant_between_them() -> None:
    # The runner goes straight from one task to the next: the end of one is the start of the
    # next, one clock read for both. After anything else (a sync task in its thread), or for a
    # task added after that instant, the start is read afresh.
    tasks = BackgroundTasks()
    first, second = tasks.add_task(anoop), tasks.add_task(anoop)
    in_thread = tasks.add_task(noop)
    after_thread, late = tasks.add_task(anoop), tasks.add_task(anoop)
    late.queued_at = math.inf  # as if another thread had added it after `after_thread` ended
    await tasks()

    assert second.started_at is first.finished_at
    assert after_thread.started_at is not in_thread.finished_at
    assert late.started_at is not after_thread.finished_at
    for before, handle in itertools.pairwise([first, second, in_thread, after_thread, late]):
        assert before.finished_at is not None
        assert handle.started_at is not None
        assert before.finished_at <= handle.started_at
