"""A task added to a request's collector after its run has ended is refused, never lost.

`inject` and the FastAPI drop-in run the request's collector after the response; once that run
is over nothing runs it again, so `add_task` on it (a collector kept past its request) raises a
`RuntimeError` instead of accepting a task that would never run. A collector a user makes and
awaits by hand keeps Starlette's rule: awaiting it again runs what was added since.

No `from __future__ import annotations`: the endpoints' annotations must resolve at run time.
"""

from typing import Any

import fastapi
import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import afterward
from afterward import BackgroundTasks, inject
from afterward.fastapi import BackgroundTasks as DropIn
from afterward.fastapi import get_background_tasks

pytestmark = pytest.mark.anyio

LATE = "already run"


def record(items: list[Any], item: Any) -> None:
    items.append(item)


def starlette_client(*routes: Route) -> httpx.AsyncClient:
    app = Starlette(routes=list(routes))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def fastapi_client(app: fastapi.FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.mark.parametrize("returns", ["value", "response", "nothing queued", "fails"])
async def test_inject_refuses_a_task_added_after_the_request_s_run(returns: str) -> None:
    kept: list[BackgroundTasks] = []
    ran: list[str] = []

    async def endpoint(tasks: BackgroundTasks) -> Any:
        kept.append(tasks)
        if returns != "nothing queued":
            tasks.add_task(record, ran, "own")
        if returns == "fails":
            raise ValueError("the endpoint fails")
        return PlainTextResponse("ok") if returns == "response" else {"ok": True}

    async with starlette_client(Route("/", inject(endpoint))) as client:
        try:
            await client.get("/")
        except ValueError:
            assert returns == "fails"
    [tasks] = kept
    with pytest.raises(RuntimeError, match=LATE):
        tasks.add_task(record, ran, "late")
    assert [getattr(t, "args", None) for t in tasks.tasks] == (
        [] if returns == "nothing queued" else [(ran, "own")]
    )
    assert ran == ([] if returns in ("fails", "nothing queued") else ["own"])


async def test_inject_accepts_tasks_added_by_a_task_while_the_run_goes_on() -> None:
    ran: list[str] = []

    def add_more(tasks: BackgroundTasks) -> None:
        tasks.add_task(record, ran, "added by a task")

    async def endpoint(tasks: BackgroundTasks) -> dict[str, bool]:
        tasks.add_task(add_more, tasks)
        return {"ok": True}

    async with starlette_client(Route("/", inject(endpoint))) as client:
        await client.get("/")
    assert ran == ["added by a task"]


async def test_the_drop_in_refuses_a_task_added_after_the_request_s_run() -> None:
    kept: list[afterward.BackgroundTasks] = []
    ran: list[str] = []
    app = fastapi.FastAPI()

    @app.get("/")
    async def endpoint(tasks: DropIn) -> dict[str, bool]:
        kept.append(tasks)
        tasks.add_task(record, ran, "own")
        return {"ok": True}

    async with fastapi_client(app) as client:
        await client.get("/")
    [tasks] = kept
    with pytest.raises(RuntimeError, match=LATE):
        tasks.add_task(record, ran, "late")
    with pytest.raises(RuntimeError, match=LATE):
        tasks.tasks.append(afterward.BackgroundTask(record, ran, "appended"))
    assert ran == ["own"]


async def test_a_collector_an_override_shares_between_requests_takes_each_request_s_tasks() -> None:
    shared = afterward.BackgroundTasks()
    ran: list[str] = []
    app = fastapi.FastAPI()
    app.dependency_overrides[get_background_tasks] = lambda: shared

    @app.get("/{item}")
    async def endpoint(item: str, tasks: DropIn) -> Response:
        tasks.add_task(record, ran, item)
        return PlainTextResponse(item)

    async with fastapi_client(app) as client:
        await client.get("/a")
        await client.get("/b")
    assert ran == ["a", "b"]
    with pytest.raises(RuntimeError, match=LATE):
        shared.add_task(record, ran, "late")


async def test_a_collector_awaited_by_hand_runs_what_was_added_since_each_time() -> None:
    ran: list[str] = []
    tasks = BackgroundTasks()
    tasks.add_task(record, ran, "first")
    await tasks()
    tasks.add_task(record, ran, "second")
    await tasks()
    assert ran == ["first", "second"]
