"""The FastAPI drop-in and the middleware: one collector per request, run detached.

No `from __future__ import annotations`: FastAPI resolves the annotations of the path operations
defined inside the tests, which name local objects.
"""

import logging
import threading
from typing import Annotated, Any

import anyio
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse

import afterward
from afterward import BackgroundTasksMiddleware, current_tasks
from afterward.fastapi import BackgroundTasks, check_app, tasks_from
from test_e2e_uvicorn import RecordOutcome
from test_fastapi_disconnect import first_chunk_then_wait, leave_mid_stream
from test_middleware import client, running
from test_middleware_e2e import serving

pytestmark = pytest.mark.anyio


async def test_the_drop_in_hands_out_the_middlewares_collector_and_it_runs_detached() -> None:
    release = anyio.Event()
    done = anyio.Event()
    seen: list[afterward.BackgroundTasks] = []

    async def slow() -> None:
        await release.wait()
        done.set()

    app = FastAPI()

    @app.post("/sign-up")
    async def sign_up(background_tasks: BackgroundTasks) -> dict[str, str]:
        seen.append(background_tasks)
        seen.append(current_tasks())
        background_tasks.add_task(slow)
        return {"status": "ok"}

    wrapped = BackgroundTasksMiddleware(app)
    async with running(wrapped), client(wrapped) as http:
        response = await http.post("/sign-up")
        assert response.json() == {"status": "ok"}
        assert not done.is_set()  # the request is over, the task still waits
        release.set()
        with anyio.fail_after(5):
            await done.wait()
    assert seen[0] is seen[1]


async def test_an_http_exception_under_the_middleware_runs_no_task_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []
    app = FastAPI()

    @app.post("/sign-up")
    async def sign_up(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(ran.append, "welcome")
        raise HTTPException(status_code=409, detail="taken")

    wrapped = BackgroundTasksMiddleware(app)
    caplog.set_level(logging.INFO, logger="afterward")
    async with running(wrapped), client(wrapped) as http:
        assert (await http.post("/sign-up")).status_code == 409
        assert wrapped.supervisor is not None
        with anyio.fail_after(5):
            await wrapped.supervisor.wait_idle()
    assert ran == []
    (message,) = [r.getMessage() for r in caplog.records if "Not running" in r.getMessage()]
    assert "status was 409" in message


async def test_a_configured_factory_gives_the_middleware_its_collector_and_options() -> None:
    reported: list[str] = []
    reported_event = threading.Event()

    def report(task: Any, exc: Exception) -> None:
        reported.append(str(exc))
        reported_event.set()

    def get_tasks() -> afterward.BackgroundTasks:
        return afterward.BackgroundTasks(on_error=report)

    Tasks = Annotated[afterward.BackgroundTasks, tasks_from(get_tasks)]

    def fails() -> None:
        raise ValueError("mail server down")

    app = FastAPI()

    @app.post("/")
    async def endpoint(tasks: Tasks) -> None:
        tasks.add_task(fails)

    wrapped = BackgroundTasksMiddleware(app)
    async with running(wrapped), client(wrapped) as http:
        await http.post("/")
        assert wrapped.supervisor is not None
        with anyio.fail_after(5):
            await wrapped.supervisor.wait_idle()
    assert reported == ["mail server down"]


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_current_tasks_works_in_the_drop_in_without_the_middleware(sync: bool) -> None:
    seen: list[afterward.BackgroundTasks] = []
    ran: list[str] = []

    app = FastAPI()
    if sync:

        @app.post("/")
        def endpoint(background_tasks: BackgroundTasks) -> None:
            seen.extend([background_tasks, current_tasks()])
            current_tasks().add_task(ran.append, "x")

    else:

        @app.post("/")
        async def endpoint(background_tasks: BackgroundTasks) -> None:  # type: ignore[misc]
            seen.extend([background_tasks, current_tasks()])
            current_tasks().add_task(ran.append, "x")

    async with client(app) as http:
        await http.post("/")
    assert seen[0] is seen[1]
    assert ran == ["x"]
    with pytest.raises(LookupError):
        current_tasks()  # the request's collector does not leak out of it


async def test_the_middleware_runs_no_drop_in_task_when_the_client_leaves_mid_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What the drop-in alone cannot see (docs/fastapi.md), the middleware does."""
    caplog.set_level(logging.INFO, logger="afterward")
    events: list[str] = []
    app = FastAPI()

    @app.get("/stream")
    async def stream(background_tasks: BackgroundTasks) -> StreamingResponse:
        background_tasks.add_task(events.append, "task")
        return StreamingResponse(first_chunk_then_wait())

    recorded = RecordOutcome(BackgroundTasksMiddleware(app))
    async with serving(recorded) as url:
        await leave_mid_stream(url, "/stream")
        await recorded.done.wait()
    assert events == []
    messages = [r.getMessage() for r in caplog.records if r.name == "afterward"]
    assert any("the response was not completed" in m for m in messages), messages


async def test_the_middleware_warns_at_startup_about_the_silent_opt_out() -> None:
    app = FastAPI()

    @app.post("/")
    async def endpoint(tasks: afterward.BackgroundTasks) -> None:  # the trap
        tasks.add_task(print, "x")

    wrapped = BackgroundTasksMiddleware(app)
    with pytest.warns(afterward.fastapi.OptOutWarning, match="endpoint"):
        async with running(wrapped):
            pass
    assert len(check_app(app, warn=False)) == 1
