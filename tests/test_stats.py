"""`afterward.stats()` and `BackgroundTasksMiddleware.stats()`: outcome counts, running, waiting.

`afterward.stats()` counts for the whole process, so its tests compare the figures before and
after; a middleware's figures start at zero with its app, so its tests compare them exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask as StarletteTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import afterward
from afterward import BackgroundTasks, BackgroundTasksMiddleware, Stats, current_tasks
from test_middleware import client, one_slot_app, running

pytestmark = pytest.mark.anyio


def difference(after: Stats, before: Stats) -> dict[str, int]:
    return {
        field.name: getattr(after, field.name) - getattr(before, field.name)
        for field in dataclasses.fields(Stats)
    }


def send_email() -> None: ...


async def notify() -> None:
    await anyio.lowlevel.checkpoint()


def broken() -> None:
    raise ConnectionError("the mail server is down")


def flaky(failures: int) -> Callable[[], None]:
    calls: list[None] = []

    def send_invoice() -> None:
        calls.append(None)
        if len(calls) <= failures:
            raise ConnectionError("the mail server is down")

    return send_invoice


def mixed_batch(tasks: BackgroundTasks) -> None:
    """3 succeed (one after 2 retries), 2 fail (one after a retry): 3 attempts retried."""
    tasks.add_task(send_email)
    tasks.add_task(notify)
    tasks.add_task(afterward.task(flaky(2), retries=2))
    tasks.add_task(broken)
    tasks.add_task(afterward.task(broken, retries=1))


def stopping_batch(tasks: BackgroundTasks) -> None:
    """1 fails, and stops the 2 after it: abandoned."""
    tasks.stop_on_error = True
    tasks.add_task(broken)
    tasks.add_task(send_email)
    tasks.add_task(notify)


MIXED = {"succeeded": 3, "failed": 3, "retried": 3, "cancelled": 0, "abandoned": 2}


async def test_stats_counts_each_outcome_of_tasks_run_inline() -> None:
    before = afterward.stats()
    mixed, stopping = BackgroundTasks(), BackgroundTasks()
    mixed_batch(mixed)
    stopping_batch(stopping)
    await mixed()
    await stopping()

    assert difference(afterward.stats(), before) == {**MIXED, "running": 0, "waiting": 0}


async def test_the_middleware_counts_its_requests_tasks_and_stats_adds_them_in() -> None:
    async def mixed(request: Request) -> Response:
        mixed_batch(current_tasks())
        return PlainTextResponse("ok")

    async def stopping(request: Request) -> Response:
        stopping_batch(current_tasks())
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(
        Starlette(routes=[Route("/mixed", mixed), Route("/stopping", stopping)])
    )
    assert app.stats() == Stats(0, 0, 0, 0, 0, running=0, waiting=0)  # before startup
    before = afterward.stats()
    async with (
        running(app),
        client(app) as http,
    ):
        await http.get("/mixed")
        await http.get("/stopping")
        assert app.supervisor is not None
        with anyio.fail_after(5):
            await app.supervisor.wait_idle()
        figures = app.stats()

    assert dataclasses.asdict(figures) == {**MIXED, "running": 0, "waiting": 0}
    assert app.stats() == figures  # still readable after shutdown
    assert difference(afterward.stats(), before) == {**MIXED, "running": 0, "waiting": 0}


async def test_running_and_waiting_count_requests_at_the_moment_of_the_snapshot() -> None:
    release = anyio.Event()
    started = anyio.Event()

    async def held() -> None:
        started.set()
        await release.wait()

    async def endpoint(request: Request) -> Response:
        tasks = current_tasks()
        tasks.add_task(held)
        tasks.add_task(held)  # two tasks, one request: it counts once
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]), max_running=1)
    before = afterward.stats()
    async with (
        running(app),
        client(app) as http,
    ):
        await http.get("/")
        with anyio.fail_after(5):
            await started.wait()
        await http.get("/")  # waits for the running slot the first request holds
        await http.get("/")
        busy, overall = app.stats(), afterward.stats()
        release.set()
        assert app.supervisor is not None
        with anyio.fail_after(5):
            await app.supervisor.wait_idle()
        idle = app.stats()

    assert (busy.running, busy.waiting, busy.succeeded) == (1, 2, 0)
    assert (overall.running - before.running, overall.waiting - before.waiting) == (1, 2)
    assert (idle.running, idle.waiting, idle.succeeded) == (0, 0, 6)


async def test_a_task_cancelled_at_the_drain_deadline_is_counted_cancelled() -> None:
    started = anyio.Event()

    async def stuck() -> None:
        started.set()
        await anyio.sleep_forever()

    async def endpoint(request: Request) -> Response:
        current_tasks().add_task(stuck)
        current_tasks().add_task(send_email)
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]), drain_timeout=0)
    async with (
        running(app),
        client(app) as http,
    ):
        await http.get("/")
        with anyio.fail_after(5):
            await started.wait()

    figures = app.stats()
    assert (figures.cancelled, figures.abandoned, figures.succeeded) == (1, 1, 0)


async def test_tasks_a_full_queue_could_not_take_are_counted_abandoned() -> None:
    release = anyio.Event()
    ran: list[int] = []
    app = one_slot_app(release, ran, handoff_timeout=0.01)
    async with (
        running(app),
        client(app) as http,
    ):
        await http.get("/?n=1")  # runs (and blocks)
        await http.get("/?n=2")  # waits
        await http.get("/?n=3")  # no room: waits 10 ms (handoff_timeout), then not run
        release.set()
        assert app.supervisor is not None
        with anyio.fail_after(5):
            await app.supervisor.wait_idle()

    assert sorted(ran) == [1, 2]
    assert (app.stats().succeeded, app.stats().abandoned) == (2, 1)


async def test_a_starlette_task_in_the_collector_is_run_but_not_counted() -> None:
    ran: list[str] = []

    async def endpoint(request: Request) -> Response:
        current_tasks().add_task(send_email)
        current_tasks().tasks.append(StarletteTask(ran.append, "starlette"))
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]))
    async with (
        running(app),
        client(app) as http,
    ):
        await http.get("/")
        assert app.supervisor is not None
        with anyio.fail_after(5):
            await app.supervisor.wait_idle()

    assert ran == ["starlette"]
    assert app.stats().succeeded == 1  # it has no handle to say how it ended


async def test_an_error_response_s_tasks_count_in_the_middleware_only_if_handed_off() -> None:
    async def endpoint(request: Request) -> Response:
        current_tasks().add_task(send_email)  # not run: the response is an error
        current_tasks().add_task(afterward.task(notify, always=True))  # run all the same
        return PlainTextResponse("down", status_code=503)

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]))
    before = afterward.stats()
    async with (
        running(app),
        client(app) as http,
    ):
        assert (await http.get("/")).status_code == 503
        assert app.supervisor is not None
        with anyio.fail_after(5):
            await app.supervisor.wait_idle()

    assert (app.stats().succeeded, app.stats().abandoned) == (1, 0)
    overall = difference(afterward.stats(), before)
    assert (overall["succeeded"], overall["abandoned"]) == (1, 1)


def test_a_snapshot_is_frozen() -> None:
    figures = afterward.stats()
    with pytest.raises(dataclasses.FrozenInstanceError):
        figures.succeeded = 0  # type: ignore[misc]
