"""docs/index.md's context-variable claim, as corrected: a value set in a sync dependency (or a
sync endpoint) reaches the tasks added there, not those added later in the endpoint.

Sync dependencies run in a worker thread, in a copy of the request's context that is dropped when
the thread returns (in Starlette's `run_in_threadpool`, FastAPI's and `inject`'s alike); a task
added there captures that copy.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import httpx
import pytest

from docs_blocks import DOCS

pytestmark = pytest.mark.anyio

APPS = """
import contextvars
from typing import Annotated

from fastapi import Depends as FastAPIDepends, FastAPI
from starlette.applications import Starlette
from starlette.routing import Route

from afterward import BackgroundTasks, Depends, inject
from afterward.fastapi import BackgroundTasks as FastAPITasks

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")
seen: list[tuple[str, str]] = []


def record(where: str) -> None:
    seen.append((where, request_id.get()))


def set_request_id(background_tasks: BackgroundTasks) -> None:
    request_id.set("r-1")
    background_tasks.add_task(record, "dependency")


async def endpoint(
    background_tasks: BackgroundTasks, _: Annotated[None, Depends(set_request_id)]
) -> dict[str, str]:
    background_tasks.add_task(record, "endpoint")
    return {}


def sync_endpoint(background_tasks: BackgroundTasks) -> dict[str, str]:
    request_id.set("r-2")
    background_tasks.add_task(record, "sync endpoint")
    return {}


starlette_app = Starlette(
    routes=[Route("/", inject(endpoint), methods=["POST"]), Route("/sync", inject(sync_endpoint))]
)

fastapi_app = FastAPI()


def fastapi_set_request_id(background_tasks: FastAPITasks) -> None:
    request_id.set("r-1")
    background_tasks.add_task(record, "dependency")


@fastapi_app.post("/")
async def fastapi_endpoint(
    background_tasks: FastAPITasks, _: Annotated[None, FastAPIDepends(fastapi_set_request_id)]
) -> dict[str, str]:
    background_tasks.add_task(record, "endpoint")
    return {}


@fastapi_app.get("/sync")
def fastapi_sync_endpoint(background_tasks: FastAPITasks) -> dict[str, str]:
    request_id.set("r-2")
    background_tasks.add_task(record, "sync endpoint")
    return {}
"""


@pytest.fixture
def apps() -> Iterator[types.ModuleType]:
    module = types.ModuleType("context_apps")
    sys.modules[module.__name__] = module
    try:
        exec(compile(APPS, "context_apps.py", "exec"), module.__dict__)
        yield module
    finally:
        del sys.modules[module.__name__]


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
async def test_a_value_set_in_a_sync_dependency_reaches_only_the_tasks_added_there(
    apps: types.ModuleType, framework: str
) -> None:
    app = getattr(apps, f"{framework}_app")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        assert (await client.post("/")).status_code == 200
        assert (await client.get("/sync")).status_code == 200
    assert apps.seen == [("dependency", "r-1"), ("endpoint", "unset"), ("sync endpoint", "r-2")]


def test_the_index_page_states_the_corrected_claim() -> None:
    text = (DOCS / "index.md").read_text(encoding="utf-8")
    assert "not those added in the endpoint" in text
    assert "are visible to it." not in text  # the old, too-broad sentence
