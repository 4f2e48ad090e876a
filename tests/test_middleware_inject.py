"""`inject` and the middleware: one collector per request; `current_tasks()` inside `inject`."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator

import anyio
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Mount, Route

from afterward import BackgroundTasks, BackgroundTasksMiddleware, Depends, current_tasks, inject
from test_middleware import client, running

pytestmark = pytest.mark.anyio


class MyTasks(BackgroundTasks):
    """A collector subclass, at module level so that `inject` can resolve annotations naming it."""


async def test_inject_hands_out_the_middlewares_collector_and_it_runs_detached() -> None:
    release = anyio.Event()
    done = anyio.Event()
    seen: list[BackgroundTasks] = []

    async def slow() -> None:
        await release.wait()
        done.set()

    def dependency(tasks: BackgroundTasks) -> str:
        seen.append(tasks)
        seen.append(current_tasks())  # in the dependency's worker thread
        return "dep"

    async def endpoint(tasks: BackgroundTasks, value: str = Depends(dependency)) -> dict[str, str]:
        seen.append(tasks)
        seen.append(current_tasks())
        tasks.add_task(slow)
        return {"value": value}

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", inject(endpoint))]))
    async with running(app), client(app) as http:
        assert (await http.get("/")).json() == {"value": "dep"}
        assert not done.is_set()  # the request is over; the task waits, detached
        release.set()
        with anyio.fail_after(5):
            await done.wait()
    assert len(seen) == 4
    assert all(collector is seen[0] for collector in seen)


async def test_an_http_exception_from_inject_under_the_middleware_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(ran.append, "x")
        raise HTTPException(404)

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", inject(endpoint))]))
    caplog.set_level(logging.INFO, logger="afterward")
    async with running(app), client(app) as http:
        assert (await http.get("/")).status_code == 404
        assert app.supervisor is not None
        with anyio.fail_after(5):
            await app.supervisor.wait_idle()
    assert ran == []
    not_run = [r.getMessage() for r in caplog.records if "Not running" in r.getMessage()]
    assert len(not_run) == 1
    assert "status was 404" in not_run[0]


async def test_a_collector_class_the_middleware_does_not_make_is_a_clear_error() -> None:
    async def endpoint(tasks: MyTasks) -> None:
        tasks.add_task(print)

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", inject(endpoint))]))
    async with running(app), client(app) as http:
        with pytest.raises(TypeError, match=r"collector=.*MyTasks"):
            await http.get("/")


async def test_the_middleware_makes_the_collector_class_inject_asks_for() -> None:
    seen: list[object] = []

    async def endpoint(tasks: MyTasks) -> None:
        seen.append(tasks)

    app = BackgroundTasksMiddleware(
        Starlette(routes=[Route("/", inject(endpoint))]), collector=MyTasks
    )
    async with running(app), client(app) as http:
        await http.get("/")
    assert isinstance(seen[0], MyTasks)


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_current_tasks_works_inside_inject_without_the_middleware(sync: bool) -> None:
    ran: list[str] = []
    threads: list[bool] = []

    def sync_endpoint(request: Request) -> None:
        threads.append(threading.current_thread() is threading.main_thread())
        current_tasks().add_task(ran.append, "sync")

    async def async_endpoint(request: Request) -> None:
        current_tasks().add_task(ran.append, "async")

    endpoint = sync_endpoint if sync else async_endpoint
    app = Starlette(routes=[Route("/", inject(endpoint))])
    async with client(app) as http:
        await http.get("/")
    assert ran == (["sync"] if sync else ["async"])
    with pytest.raises(LookupError):
        current_tasks()


async def test_under_the_middleware_yield_dependencies_close_before_the_detached_tasks() -> None:
    """As docs/semantics.md says: the request ends (teardown included), then the tasks run."""
    events: list[str] = []
    done = anyio.Event()

    async def session() -> AsyncIterator[str]:
        events.append("session opened")
        yield "session"
        events.append("session closed")

    async def task() -> None:
        events.append("task ran")
        done.set()

    async def endpoint(tasks: BackgroundTasks, db: str = Depends(session)) -> None:
        tasks.add_task(task)

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", inject(endpoint))]))
    async with running(app), client(app) as http:
        await http.get("/")
        with anyio.fail_after(5):
            await done.wait()
    assert events == ["session opened", "session closed", "task ran"]


async def test_an_inject_endpoint_of_a_mounted_app_gets_the_middlewares_collector() -> None:
    # The middleware leaves its slot in the scope; a mounted app's scope carries it along, so
    # the endpoint's collector is the middleware's, and its task runs detached.
    seen: list[BackgroundTasks] = []
    release, done = anyio.Event(), anyio.Event()

    async def slow() -> None:
        await release.wait()
        done.set()

    async def endpoint(tasks: BackgroundTasks) -> None:
        seen.extend([tasks, current_tasks()])
        tasks.add_task(slow)

    inner = Starlette(routes=[Route("/e", inject(endpoint))])
    app = BackgroundTasksMiddleware(Starlette(routes=[Mount("/sub", app=inner)]))
    async with running(app), client(app) as http:
        with anyio.fail_after(5):  # inline, the request would wait for its task
            assert (await http.get("/sub/e")).status_code == 200
        assert not done.is_set()  # the response came first: the task runs detached
        release.set()
        with anyio.fail_after(5):
            await done.wait()
    [parameter, current] = seen
    assert parameter is current
