"""Setting options on the FastAPI drop-in's collector: overriding the factory, and `tasks_from`.

No `from __future__ import annotations`: FastAPI resolves the annotations of the path operations
defined inside the tests, which name local objects.
"""

import functools
import logging
from typing import Annotated, Any

import anyio
import fastapi
import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.background import BackgroundTask as StarletteTask

import afterward
from afterward.fastapi import BackgroundTasks, get_background_tasks, tasks_from

pytestmark = pytest.mark.anyio


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def record(events: list[Any], item: Any) -> None:
    events.append(item)


def fail() -> None:
    raise RuntimeError("task failed")


def app_adding(events: list[Any], *tasks: tuple[Any, ...]) -> FastAPI:
    """An app whose path operation adds `tasks` (`(func, *args)` each) to the drop-in collector."""
    app = FastAPI()

    @app.post("/")
    async def path_operation(background_tasks: BackgroundTasks) -> dict[str, str]:
        for func, *args in tasks:
            background_tasks.add_task(func, *args)
        return {"message": "sent"}

    return app


# -- the obvious override ------------------------------------------------------------------------


async def test_overriding_the_factory_sets_on_error_for_the_request_s_tasks() -> None:
    reported: list[tuple[str, str]] = []
    events: list[Any] = []

    def report(task: StarletteTask, exc: Exception) -> None:
        reported.append((getattr(task, "name", "?"), str(exc)))

    app = app_adding(events, (fail,), (record, events, "next"))
    app.dependency_overrides[get_background_tasks] = lambda: afterward.BackgroundTasks(
        on_error=report
    )

    async with client_for(app) as client:
        response = await client.post("/")

    assert response.json() == {"message": "sent"}
    assert reported == [(f"{__name__}.fail", "task failed")]
    assert events == ["next"]


async def test_overriding_the_factory_sets_stop_on_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[Any] = []
    app = app_adding(events, (fail,), (record, events, "skipped"))
    app.dependency_overrides[get_background_tasks] = lambda: afterward.BackgroundTasks(
        stop_on_error=True
    )

    async with client_for(app) as client:
        await client.post("/")

    assert events == []
    assert f"{__name__}.record" in caplog.text  # the skipped task is named, not lost


async def test_an_async_override_works_too() -> None:
    events: list[Any] = []
    collectors: list[afterward.BackgroundTasks] = []

    async def make() -> afterward.BackgroundTasks:
        tasks = afterward.BackgroundTasks()
        collectors.append(tasks)
        return tasks

    app = app_adding(events, (record, events, "task"))
    app.dependency_overrides[get_background_tasks] = make

    async with client_for(app) as client:
        await client.post("/")

    assert events == ["task"]
    assert [len(tasks.tasks) for tasks in collectors] == [1]


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(lambda: fastapi.BackgroundTasks(), id="fastapi-collector"),
        pytest.param(lambda: None, id="none"),
        pytest.param(lambda: ["not a collector"], id="list"),
    ],
)
async def test_an_override_returning_something_else_is_a_type_error_in_the_request(
    wrong: Any,
) -> None:
    events: list[Any] = []
    app = app_adding(events, (record, events, "task"))
    app.dependency_overrides[get_background_tasks] = wrong

    async with client_for(app) as client:
        with pytest.raises(TypeError, match="not an afterward collector") as caught:
            await client.post("/")

    assert "get_background_tasks" in str(caught.value)
    assert "afterward.BackgroundTasks(on_error=report)" in str(caught.value)
    assert events == []


# -- tasks_from: a collector with options for the whole app --------------------------------------


def report_to(reported: list[str]) -> afterward.ErrorCallback:
    def report(task: StarletteTask, exc: Exception) -> None:
        reported.append(str(exc))

    return report


async def test_tasks_from_gives_every_parameter_one_configured_collector() -> None:
    reported: list[str] = []
    events: list[Any] = []
    seen: list[afterward.BackgroundTasks] = []

    def get_tasks() -> afterward.BackgroundTasks:
        return afterward.BackgroundTasks(on_error=report_to(reported))

    Tasks = Annotated[afterward.BackgroundTasks, tasks_from(get_tasks)]

    def dependency(tasks: Tasks) -> None:
        seen.append(tasks)
        tasks.add_task(fail)

    app = FastAPI()

    @app.post("/", dependencies=[Depends(dependency)])
    async def path_operation(tasks: Tasks) -> None:
        seen.append(tasks)
        tasks.add_task(record, events, "after the failure")

    async with client_for(app) as client:
        await client.post("/")

    first, second = seen
    assert first is second
    assert reported == ["task failed"]
    assert events == ["after the failure"]


async def test_tasks_from_s_factory_can_be_overridden_in_tests() -> None:
    events: list[Any] = []
    replacement = afterward.BackgroundTasks()

    def get_tasks() -> afterward.BackgroundTasks:
        raise AssertionError("overridden")

    Tasks = Annotated[afterward.BackgroundTasks, tasks_from(get_tasks)]
    app = FastAPI()

    @app.post("/")
    async def path_operation(tasks: Tasks) -> None:
        tasks.add_task(record, events, "task")

    app.dependency_overrides[get_tasks] = lambda: replacement
    async with client_for(app) as client:
        await client.post("/")

    assert [task.args for task in replacement.tasks] == [(events, "task")]
    assert events == ["task"]


async def test_tasks_from_s_factory_may_have_dependencies_of_its_own() -> None:
    limiter = anyio.CapacityLimiter(3)
    used: list[Any] = []

    def get_limiter() -> anyio.CapacityLimiter:
        return limiter

    def get_tasks(
        limiter: Annotated[anyio.CapacityLimiter, Depends(get_limiter)],
    ) -> afterward.BackgroundTasks:
        return afterward.BackgroundTasks(limiter=limiter)

    app = FastAPI()

    @app.post("/")
    async def path_operation(
        tasks: Annotated[afterward.BackgroundTasks, tasks_from(get_tasks)],
    ) -> None:
        used.append(tasks.limiter)

    async with client_for(app) as client:
        response = await client.post("/")

    assert response.status_code == 200
    assert used == [limiter]
    assert [p["name"] for p in app.openapi()["paths"]["/"]["post"].get("parameters", [])] == []


def test_tasks_from_the_same_factory_twice_is_the_same_dependency() -> None:
    def get_tasks() -> afterward.BackgroundTasks:
        return afterward.BackgroundTasks()

    assert tasks_from(get_tasks).dependency is tasks_from(get_tasks).dependency


@pytest.mark.parametrize(
    "factory",
    [
        pytest.param(afterward.BackgroundTasks, id="the-class"),
        pytest.param(
            functools.partial(afterward.BackgroundTasks, stop_on_error=True),
            id="a-partial-of-the-class",
        ),
    ],
)
def test_tasks_from_refuses_a_class_whose_parameters_would_become_query_parameters(
    factory: Any,
) -> None:
    with pytest.raises(TypeError, match="needs a function that returns the collector"):
        tasks_from(factory)


def test_tasks_from_refuses_something_not_callable() -> None:
    with pytest.raises(TypeError, match=r"got 'report'"):
        tasks_from("report")  # type: ignore[arg-type]


async def test_a_failing_configured_task_is_still_logged_when_on_error_is_set(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="afterward")
    reported: list[str] = []
    app = app_adding([], (fail,))
    app.dependency_overrides[get_background_tasks] = lambda: afterward.BackgroundTasks(
        on_error=report_to(reported)
    )

    async with client_for(app) as client:
        await client.post("/")

    assert reported == ["task failed"]
    assert f"{__name__}.fail failed" in caplog.text
