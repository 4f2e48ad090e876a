"""The pytest plugin: registered by installing afterward, fixtures only, inert unless used."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

import afterward._recording
import afterward.testing.plugin

pytest_plugins = ["pytester"]

USER_TESTS = """
import anyio
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.middleware import Middleware

import afterward.fastapi
from afterward import BackgroundTasksMiddleware, current_tasks

sent = []


def send_welcome(email):
    sent.append(email)


app = FastAPI()


@app.post("/users/{email}")
async def sign_up(email: str, tasks: afterward.fastapi.BackgroundTasks):
    tasks.add_task(send_welcome, email)
    return {}


detached = FastAPI(middleware=[Middleware(BackgroundTasksMiddleware)])


@detached.post("/users/{email}")
async def sign_up_detached(email: str):
    current_tasks().add_task(send_welcome, email)
    return {}


def test_recorded(afterward_recorder):
    with TestClient(app) as client:
        client.post("/users/ada")
    afterward_recorder.assert_called(send_welcome, "ada")
    assert sent == []
    afterward_recorder.run_sync()
    assert sent == ["ada"]


def test_not_recorded_without_the_fixture():
    sent.clear()
    with TestClient(app) as client:
        client.post("/users/grace")
    assert sent == ["grace"]


def test_wait_idle_with_testclient(afterward_wait_idle):
    sent.clear()
    with TestClient(detached) as client:
        client.post("/users/linus")
        afterward_wait_idle.sync(client)
        assert sent == ["linus"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_wait_idle_async(afterward_wait_idle, anyio_backend):
    import httpx
    from afterward.testing import lifespan

    sent.clear()
    transport = httpx.ASGITransport(app=detached)
    async with lifespan(detached), httpx.AsyncClient(
        transport=transport, base_url="http://test"
    ) as client:
        await client.post("/users/margaret")
        await afterward_wait_idle(detached)
        assert sent == ["margaret"]
"""


def test_installing_afterward_registers_the_plugin() -> None:
    [plugin] = [ep for ep in entry_points(group="pytest11") if ep.name == "afterward"]
    assert plugin.value == "afterward.testing.plugin"
    assert plugin.load() is afterward.testing.plugin


def test_the_plugin_has_fixtures_and_no_hooks() -> None:
    hooks = [name for name in vars(afterward.testing.plugin) if name.startswith("pytest_")]
    assert hooks == []
    assert afterward.testing.plugin.__all__ == ["afterward_recorder", "afterward_wait_idle"]


def test_recording_is_off_in_a_test_that_does_not_ask_for_it() -> None:
    assert afterward._recording.recorder is None


def test_the_fixtures_work_in_a_users_test_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


def test_the_plugin_can_be_disabled_like_any_other(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="def test_recorded(afterward_recorder):\n    pass\n",
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:afterward", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'afterward_recorder' not found*"])


def test_the_fixtures_are_listed_with_their_docstrings(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--fixtures", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(
        [
            "*afterward_recorder*",
            "*Record every collector's tasks instead of running them, for the whole test.*",
            "*afterward_wait_idle*",
            "*Wait until `BackgroundTasksMiddleware` has run the tasks handed to it.*",
        ]
    )
