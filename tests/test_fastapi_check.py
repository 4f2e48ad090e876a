"""`check_app`: the parameters where FastAPI silently injects its own collector are found and named.

No `from __future__ import annotations`: FastAPI resolves the annotations of the path operations
defined inside the tests, which name local objects.
"""

from typing import Annotated, Any

import fastapi
import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, WebSocket
from starlette.applications import Starlette
from starlette.routing import Host, Mount, Router

import afterward
from afterward.fastapi import BackgroundTasks, OptOut, OptOutWarning, check_app, tasks_from


class WithOptions(afterward.BackgroundTasks):
    """A subclass for options, as a user might write for Starlette."""


def describe(problems: list[OptOut]) -> list[tuple[str, str, str, str]]:
    return [
        (p.route, p.function.rsplit(".", 1)[-1], p.parameter, p.annotation.__name__)
        for p in problems
    ]


def test_an_app_using_the_drop_in_everywhere_has_no_problem() -> None:
    app = FastAPI()

    def dependency(background_tasks: BackgroundTasks) -> None:
        pass

    @app.post("/", dependencies=[Depends(dependency)])
    async def path_operation(
        background_tasks: BackgroundTasks,
        native: fastapi.BackgroundTasks,  # FastAPI's own, declared as such: not a mistake
        configured: Annotated[afterward.BackgroundTasks, tasks_from(lambda: WithOptions())],
    ) -> None:
        pass

    assert check_app(app) == []


def test_the_class_as_an_annotation_is_reported_with_endpoint_route_and_fix() -> None:
    app = FastAPI()

    @app.post("/send")
    async def send(background_tasks: afterward.BackgroundTasks) -> None:
        pass

    with pytest.warns(OptOutWarning) as warned:
        problems = check_app(app)

    [problem] = problems
    assert problem == OptOut(
        route="POST /send",
        endpoint=f"{__name__}.test_the_class_as_an_annotation_is_reported_with_endpoint_route_and_fix.<locals>.send",
        function=f"{__name__}.test_the_class_as_an_annotation_is_reported_with_endpoint_route_and_fix.<locals>.send",
        parameter="background_tasks",
        annotation=afterward.BackgroundTasks,
    )
    [warning] = warned
    message = str(warning.message)
    assert message == str(problem)
    assert (
        "declares `background_tasks: afterward._tasks.BackgroundTasks` without Depends" in message
    )
    assert "route POST /send" in message
    assert "from afterward.fastapi import BackgroundTasks" in message
    assert warning.filename == __file__  # points at the caller of check_app


def test_a_subclass_in_a_sub_dependency_is_reported_under_the_endpoint_using_it() -> None:
    app = FastAPI()

    def inner(tasks: WithOptions) -> None:
        pass

    def outer(_: Annotated[None, Depends(inner)]) -> None:
        pass

    @app.get("/items")
    def items(_: Annotated[None, Depends(outer)]) -> None:
        pass

    problems = check_app(app, warn=False)

    assert describe(problems) == [("GET /items", "inner", "tasks", "WithOptions")]
    assert "a dependency of " in str(problems[0])
    assert problems[0].endpoint.endswith(".items")


def test_router_and_app_dependencies_websockets_routers_mounts_and_hosts_are_walked() -> None:
    def app_level(tasks: afterward.BackgroundTasks) -> None:
        pass

    def router_level(tasks: afterward.BackgroundTasks) -> None:
        pass

    app = FastAPI(dependencies=[Depends(app_level)])
    router = APIRouter(prefix="/router", dependencies=[Depends(router_level)])

    @router.put("/item")
    def put_item() -> None:
        pass

    @app.websocket("/ws")
    async def socket(websocket: WebSocket, tasks: WithOptions) -> None:
        pass

    app.include_router(router)

    sub = FastAPI()

    @sub.delete("/thing")
    def delete_thing(tasks: afterward.BackgroundTasks) -> None:
        pass

    outer = Starlette(
        routes=[
            Mount("/app", app=app),
            Host("api.example.com", app=Router([Mount("/sub", app=sub)])),
        ]
    )

    problems = check_app(outer, warn=False)

    assert describe(problems) == [
        ("WEBSOCKET /app/ws", "socket", "tasks", "WithOptions"),
        ("WEBSOCKET /app/ws", "app_level", "tasks", "BackgroundTasks"),
        ("PUT /app/router/item", "app_level", "tasks", "BackgroundTasks"),
        ("PUT /app/router/item", "router_level", "tasks", "BackgroundTasks"),
        ("DELETE /sub/thing", "delete_thing", "tasks", "BackgroundTasks"),
    ]


def test_a_dependency_used_twice_in_one_route_is_reported_once() -> None:
    app = FastAPI()

    def shared(tasks: afterward.BackgroundTasks) -> None:
        pass

    @app.get("/", dependencies=[Depends(shared), Depends(shared, use_cache=False)])
    def endpoint() -> None:
        pass

    assert len(check_app(app, warn=False)) == 1


def test_string_annotations_are_resolved_as_fastapi_does() -> None:
    namespace: dict[str, Any] = {}
    exec(
        "from __future__ import annotations\n"
        "import afterward\n"
        "from fastapi import FastAPI\n"
        "app = FastAPI()\n"
        "@app.get('/')\n"
        "def endpoint(tasks: afterward.BackgroundTasks) -> None: ...\n",
        namespace,
    )

    assert describe(check_app(namespace["app"], warn=False)) == [
        ("GET /", "endpoint", "tasks", "BackgroundTasks")
    ]


@pytest.mark.anyio
async def test_the_problem_is_real_fastapi_injects_its_own_collector() -> None:
    """The control: what check_app reports is what FastAPI does."""
    seen: list[Any] = []
    app = FastAPI()

    @app.get("/")
    async def endpoint(tasks: afterward.BackgroundTasks) -> None:
        seen.append(type(tasks))

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        await c.get("/")

    assert seen == [fastapi.BackgroundTasks]
    assert len(check_app(app, warn=False)) == 1


def test_check_app_refuses_something_without_routes() -> None:
    with pytest.raises(TypeError, match=r"check_app\(\) needs a FastAPI or Starlette app"):
        check_app(object())
