"""`BackgroundTasks(concurrency=N)`: up to N tasks of one collector at once, inline and detached."""

from __future__ import annotations

import threading

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from afterward import (
    BackgroundTask,
    BackgroundTasks,
    BackgroundTasksMiddleware,
    current_tasks,
    task,
)
from test_middleware import client, running

pytestmark = pytest.mark.anyio


class Peak:
    """Counts the tasks running at once; each waits until `together` of them run."""

    def __init__(self, together: int) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.barrier = threading.Barrier(together, timeout=5)
        self.all_there = anyio.Event()
        self.together = together

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1

    def sync(self) -> None:
        self.enter()
        try:
            self.barrier.wait()  # raises BrokenBarrierError unless `together` run at once
        finally:
            self.leave()

    async def asynchronous(self) -> None:
        self.enter()
        try:
            if self.now >= self.together:
                self.all_there.set()
            with anyio.fail_after(5):
                await self.all_there.wait()
        finally:
            self.leave()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_up_to_n_tasks_run_at_once_inline(kind: str) -> None:
    peak = Peak(together=2)
    func = peak.sync if kind == "sync" else peak.asynchronous
    tasks = BackgroundTasks(concurrency=2)
    handles = [tasks.add_task(func) for _ in range(4)]
    with anyio.fail_after(10):
        await tasks()
    assert [h.status for h in handles] == ["succeeded"] * 4
    assert peak.peak == 2


async def test_mixed_sync_and_async_tasks_run_together() -> None:
    peak = Peak(together=2)
    tasks = BackgroundTasks(concurrency=3)
    handles = [
        tasks.add_task(peak.sync),
        tasks.add_task(peak.sync),
        tasks.add_task(peak.asynchronous),
    ]
    peak.all_there.set()  # the async one need not wait for anyone
    with anyio.fail_after(10):
        await tasks()
    assert [h.status for h in handles] == ["succeeded"] * 3


async def test_the_default_runs_one_task_at_a_time_in_order() -> None:
    order: list[str] = []
    now = [0]

    async def step(tag: str) -> None:
        now[0] += 1
        assert now[0] == 1
        await anyio.sleep(0)
        order.append(tag)
        now[0] -= 1

    tasks = BackgroundTasks()
    for tag in "abcd":
        tasks.add_task(step, tag)
    await tasks()
    assert order == list("abcd")


async def test_concurrency_runs_detached_under_the_middleware() -> None:
    peak = Peak(together=3)
    handles: list[BackgroundTask] = []

    async def endpoint(request: Request) -> Response:
        collector = current_tasks()
        handles.extend(collector.add_task(peak.sync) for _ in range(3))
        handles.append(collector.add_task(task(peak.asynchronous, retries=1)))
        peak.all_there.set()
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(
        Starlette(routes=[Route("/", endpoint)]),
        collector=lambda: BackgroundTasks(concurrency=3),
    )
    async with running(app), client(app) as http:
        await http.get("/")
        with anyio.fail_after(10):
            for handle in handles:
                await handle.wait()
    assert [h.status for h in handles] == ["succeeded"] * 4
    assert peak.peak == 3


async def test_stop_on_error_stops_the_lanes_from_taking_more() -> None:
    b_started, failing = anyio.Event(), anyio.Event()

    async def fail() -> None:
        await b_started.wait()
        failing.set()
        raise ValueError("boom")

    async def record(tag: str) -> None:
        b_started.set()
        await failing.wait()  # the failure is reported before this lane takes another task

    tasks = BackgroundTasks(concurrency=2, stop_on_error=True)
    first, second = tasks.add_task(fail), tasks.add_task(record, "b")
    rest = [tasks.add_task(record, tag) for tag in "cde"]
    await tasks()
    assert first.status == "failed"
    assert second.status == "succeeded"  # started alongside the failing one
    assert [h.status for h in rest] == ["abandoned"] * 3


async def test_cancelling_a_concurrent_run_cancels_the_running_and_abandons_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = [anyio.Event(), anyio.Event()]

    async def hangs(index: int) -> None:
        started[index].set()
        await anyio.sleep_forever()

    tasks = BackgroundTasks(concurrency=2)
    hanging = [tasks.add_task(hangs, 0), tasks.add_task(hangs, 1)]
    never = tasks.add_task(hangs, 0)
    async with anyio.create_task_group() as group:
        group.start_soon(tasks)
        with anyio.fail_after(5):
            for event in started:
                await event.wait()
        group.cancel_scope.cancel()
    assert [h.status for h in hanging] == ["cancelled", "cancelled"]
    assert never.status == "abandoned"
    assert "1 task(s) never started" in caplog.text


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2", None])
def test_concurrency_must_be_a_whole_number_of_at_least_one(value: object) -> None:
    with pytest.raises(TypeError, match=r"concurrency must be a whole number >= 1"):
        BackgroundTasks(concurrency=value)  # type: ignore[arg-type]


async def test_starlette_tasks_in_a_concurrent_collector_run_as_they_run_themselves() -> None:
    from starlette.background import BackgroundTask as StarletteTask

    ran: list[str] = []
    tasks = BackgroundTasks([StarletteTask(ran.append, "starlette")], concurrency=2)
    tasks.add_task(ran.append, "afterward")
    await tasks()
    assert sorted(ran) == ["afterward", "starlette"]
