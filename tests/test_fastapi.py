"""`afterward.fastapi`: the drop-in for `from fastapi import BackgroundTasks`, in real FastAPI apps.

No `from __future__ import annotations` here, unlike the rest of the code: FastAPI resolves the
annotations of path operations and dependencies, and those defined inside the tests name local
functions that string annotations could not resolve.
"""

import contextvars
import importlib
import logging
import subprocess
import sys
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import fastapi
import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, WebSocket
from starlette.background import BackgroundTask as StarletteTask
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Scope
from starlette.websockets import WebSocketDisconnect

import afterward
from afterward.fastapi import BackgroundTasks, get_background_tasks
from seed import SEED_ANNOTATED_PIPE, SEED_DEPENDENCY_VARIANTS, SEED_NOTIFICATION

pytestmark = pytest.mark.anyio


def client_for(app: FastAPI, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def record(events: list[Any], item: Any) -> None:
    events.append(item)


def fail() -> None:
    raise RuntimeError("task failed")


def afterward_messages(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "afterward"]


# -- the seed's examples (tests/seed.py), with only the import changed ---------------------------
# `port` changes the one import line; everything else runs as written.


def port(source: str) -> str:
    """Return `source` importing `BackgroundTasks` from afterward: the one change a user makes."""
    lines = source.splitlines()
    [index] = [i for i, line in enumerate(lines) if line.startswith("from fastapi import ")]
    names = lines[index].removeprefix("from fastapi import ").split(", ")
    names.remove("BackgroundTasks")
    lines[index] = "from fastapi import " + ", ".join(names)
    lines.insert(index + 1, "from afterward.fastapi import BackgroundTasks")
    return "\n".join(lines)


def load(source: str, name: str = "seed_example") -> FastAPI:
    """Execute `source` as a module of its own, as `uvicorn module:app` would, and return `app`."""
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec", dont_inherit=True), module.__dict__)
    app = module.__dict__["app"]
    assert isinstance(app, FastAPI)
    return app


def test_the_port_changes_only_the_import_of_background_tasks() -> None:
    removed = set(SEED_ANNOTATED_PIPE.splitlines()) - set(port(SEED_ANNOTATED_PIPE).splitlines())
    added = set(port(SEED_ANNOTATED_PIPE).splitlines()) - set(SEED_ANNOTATED_PIPE.splitlines())

    assert removed == {"from fastapi import BackgroundTasks, Depends, FastAPI"}
    assert added == {
        "from fastapi import Depends, FastAPI",
        "from afterward.fastapi import BackgroundTasks",
    }


async def test_seed_notification_example_writes_the_notification_after_responding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with client_for(load(port(SEED_NOTIFICATION))) as client:
        response = await client.post("/send-notification/foo@example.com")

    assert response.status_code == 200
    assert response.json() == {"message": "Notification sent in the background"}
    assert (
        tmp_path / "log.txt"
    ).read_text() == "notification for foo@example.com: some notification"


SEED_DEPENDENCY_EXAMPLES = pytest.mark.parametrize("variant", SEED_DEPENDENCY_VARIANTS)


@SEED_DEPENDENCY_EXAMPLES
async def test_seed_dependency_example_logs_the_query_then_the_message(
    variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with client_for(load(port(SEED_DEPENDENCY_VARIANTS[variant]))) as client:
        response = await client.post("/send-notification/foo@example.com", params={"q": "bar"})

    assert response.status_code == 200
    assert response.json() == {"message": "Message sent"}
    assert (tmp_path / "log.txt").read_text() == "found query: bar\nmessage to foo@example.com\n"


@SEED_DEPENDENCY_EXAMPLES
async def test_seed_dependency_example_without_a_query_logs_only_the_message(
    variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with client_for(load(port(SEED_DEPENDENCY_VARIANTS[variant]))) as client:
        response = await client.post("/send-notification/foo@example.com")

    assert response.status_code == 200
    assert (tmp_path / "log.txt").read_text() == "message to foo@example.com\n"


@SEED_DEPENDENCY_EXAMPLES
def test_seed_dependency_example_openapi_shows_only_the_user_s_parameters(variant: str) -> None:
    app = load(port(SEED_DEPENDENCY_VARIANTS[variant]))
    operation = app.openapi()["paths"]["/send-notification/{email}"]["post"]

    assert [(p["name"], p["in"]) for p in operation["parameters"]] == [
        ("email", "path"),
        ("q", "query"),
    ]


@SEED_DEPENDENCY_EXAMPLES
async def test_seed_dependency_example_unported_gives_the_same_log_on_fastapi_itself(
    variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: FastAPI's own BackgroundTasks, same code, same log as the ported example."""
    monkeypatch.chdir(tmp_path)
    async with client_for(load(SEED_DEPENDENCY_VARIANTS[variant])) as client:
        await client.post("/send-notification/foo@example.com", params={"q": "bar"})

    assert (tmp_path / "log.txt").read_text() == "found query: bar\nmessage to foo@example.com\n"


# -- one collector per request -------------------------------------------------------------------


async def test_one_afterward_collector_per_request_is_shared_by_all_dependencies() -> None:
    seen: list[Any] = []

    def sub_dependency(background_tasks: BackgroundTasks) -> None:
        seen.append(background_tasks)

    async def dependency(
        background_tasks: BackgroundTasks, _: Annotated[None, Depends(sub_dependency)]
    ) -> None:
        seen.append(background_tasks)

    app = FastAPI()

    @app.get("/")
    def path_operation(
        background_tasks: BackgroundTasks, _: Annotated[None, Depends(dependency)]
    ) -> None:
        seen.append(background_tasks)

    async with client_for(app) as client:
        await client.get("/")
        await client.get("/")

    first, second = seen[:3], seen[3:]
    assert all(isinstance(tasks, afterward.BackgroundTasks) for tasks in seen)
    assert all(tasks is first[0] for tasks in first)
    assert all(tasks is second[0] for tasks in second)
    assert first[0] is not second[0]


def test_calling_the_alias_builds_a_collector_by_hand() -> None:
    tasks = BackgroundTasks(stop_on_error=True)

    assert isinstance(tasks, afterward.BackgroundTasks)
    assert tasks.stop_on_error


# -- when the tasks run --------------------------------------------------------------------------


async def call(app: ASGIApp, events: list[Any], scope: Scope, incoming: list[Message]) -> None:
    """Run `app` as a server would, recording the type of every message it sends in `events`."""

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        events.append(message["type"])

    await app(scope, receive, send)


def http_scope(path: str) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "server": ("test", 80),
    }


async def test_tasks_run_after_the_response_has_been_sent() -> None:
    events: list[Any] = []
    app = FastAPI()

    @app.post("/")
    async def path_operation(background_tasks: BackgroundTasks) -> dict[str, str]:
        background_tasks.add_task(record, events, "task")
        return {"message": "sent"}

    await call(app, events, http_scope("/"), [{"type": "http.request", "body": b""}])

    assert events == ["http.response.start", "http.response.body", "task"]


async def test_a_failing_task_does_not_break_the_response_and_the_next_task_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[Any] = []
    app = FastAPI()

    @app.post("/")
    async def path_operation(background_tasks: BackgroundTasks) -> dict[str, str]:
        background_tasks.add_task(fail)
        background_tasks.add_task(record, events, "next")
        return {"message": "sent"}

    async with client_for(app) as client:
        response = await client.post("/")

    assert response.json() == {"message": "sent"}
    assert events == ["next"]
    assert f"Background task {__name__}.fail failed" in caplog.text


async def test_a_response_with_its_own_background_runs_it_first_then_the_tasks() -> None:
    events: list[Any] = []
    app = FastAPI()

    @app.post("/")
    async def path_operation(background_tasks: BackgroundTasks) -> JSONResponse:
        background_tasks.add_task(record, events, "injected")
        return JSONResponse({}, background=StarletteTask(record, events, "own"))

    await call(app, events, http_scope("/"), [{"type": "http.request", "body": b""}])

    assert events == ["http.response.start", "http.response.body", "own", "injected"]


async def test_returning_attach_runs_the_tasks_inside_the_response_and_only_once() -> None:
    events: list[Any] = []
    app = FastAPI()

    async def get_resource() -> AsyncIterator[str]:
        yield "resource"
        events.append("teardown")

    @app.post("/attached")
    async def attached(
        background_tasks: BackgroundTasks, _: Annotated[str, Depends(get_resource)]
    ) -> JSONResponse:
        background_tasks.add_task(record, events, "injected")
        response = JSONResponse({}, background=StarletteTask(record, events, "own"))
        return afterward.attach(response, background_tasks)

    @app.post("/not-attached")
    async def not_attached(
        background_tasks: BackgroundTasks, _: Annotated[str, Depends(get_resource)]
    ) -> JSONResponse:
        background_tasks.add_task(record, events, "injected")
        return JSONResponse({}, background=StarletteTask(record, events, "own"))

    async with client_for(app) as client:
        await client.post("/attached")
        attached_events = events[:]
        events.clear()
        await client.post("/not-attached")

    # Attached, the tasks run inside the response, before any dependency teardown; without
    # attach they still run, but at this dependency's exit (after later dependencies' teardown).
    assert attached_events == ["own", "injected", "teardown"]
    assert events == ["own", "teardown", "injected"]


async def test_a_task_can_use_a_resource_of_a_yield_dependency() -> None:
    events: list[Any] = []
    app = FastAPI()

    async def get_session(background_tasks: BackgroundTasks) -> AsyncIterator[dict[str, bool]]:
        session = {"open": True}
        yield session
        session["open"] = False

    def use(session: dict[str, bool]) -> None:
        events.append(session["open"])

    @app.post("/")
    async def path_operation(
        background_tasks: BackgroundTasks,
        session: Annotated[dict[str, bool], Depends(get_session)],
    ) -> None:
        background_tasks.add_task(use, session)

    async with client_for(app) as client:
        await client.post("/")

    assert events == [True]


async def test_tasks_added_to_fastapi_s_own_collector_in_the_same_request_run_too() -> None:
    events: list[Any] = []
    app = FastAPI()

    def dependency(native: fastapi.BackgroundTasks) -> None:
        native.add_task(record, events, "native")

    @app.post("/")
    async def path_operation(
        background_tasks: BackgroundTasks, _: Annotated[None, Depends(dependency)]
    ) -> None:
        background_tasks.add_task(record, events, "afterward")

    async with client_for(app) as client:
        await client.post("/")

    assert sorted(events) == ["afterward", "native"]


async def test_fastapi_s_own_tasks_keep_its_semantics_next_to_the_drop_in_s() -> None:
    # The native collector runs afterward's entry itself (so tracing sees no extra task) and
    # every other entry through FastAPI's own collector: order, and a failure that stops the
    # rest and reaches the server, are FastAPI's.
    events: list[Any] = []
    app = FastAPI()

    @app.post("/")
    async def path_operation(
        background_tasks: BackgroundTasks, native: fastapi.BackgroundTasks
    ) -> None:
        assert isinstance(native, fastapi.BackgroundTasks)
        native.add_task(record, events, "native, first")
        native.add_task(fail)
        native.add_task(record, events, "native, after the failure")
        background_tasks.add_task(record, events, "afterward")

    async with client_for(app) as client:
        with pytest.raises(RuntimeError, match="task failed"):
            await client.post("/")

    assert events == ["afterward", "native, first"]


async def test_a_contextvar_set_in_a_sync_dependency_is_visible_in_the_task() -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    events: list[Any] = []

    def read_request_id() -> None:
        events.append(request_id.get("unset"))

    def identify(background_tasks: BackgroundTasks) -> None:
        request_id.set("req-42")
        background_tasks.add_task(read_request_id)

    app = FastAPI()

    @app.post("/", dependencies=[Depends(identify)])
    def path_operation() -> None:
        pass

    async with client_for(app) as client:
        await client.post("/")

    assert events == ["req-42"]


# -- when they do not run ------------------------------------------------------------------------


async def test_an_http_exception_runs_no_task_and_logs_them_by_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="afterward")
    events: list[Any] = []
    app = FastAPI()

    @app.post("/")
    async def path_operation(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(record, events, "task")
        raise HTTPException(status_code=404, detail="Item not found")

    async with client_for(app) as client:
        response = await client.post("/")

    assert response.status_code == 404
    assert events == []
    assert afterward_messages(caplog) == [
        (
            logging.INFO,
            "Not running 1 background task(s) because the request failed with HTTPException: "
            f"{__name__}.record.",
        )
    ]


async def test_an_exception_runs_no_task_and_logs_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[Any] = []
    app = FastAPI()

    def dependency(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(record, events, "from the dependency")

    @app.post("/", dependencies=[Depends(dependency)])
    async def path_operation(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(record, events, "from the path operation")
        raise RuntimeError("boom")

    async with client_for(app, raise_app_exceptions=False) as client:
        response = await client.post("/")

    assert response.status_code == 500
    assert events == []
    assert afterward_messages(caplog) == [
        (
            logging.WARNING,
            "Not running 2 background task(s) because the request failed with RuntimeError: "
            f"{__name__}.record, {__name__}.record.",
        )
    ]


async def test_a_validation_error_runs_no_task_and_logs_them_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="afterward")
    events: list[Any] = []
    app = FastAPI()

    def dependency(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(record, events, "task")

    @app.post("/", dependencies=[Depends(dependency)])
    async def path_operation(count: int) -> None:
        raise AssertionError("not called")

    async with client_for(app) as client:
        response = await client.post("/", params={"count": "many"})

    assert response.status_code == 422
    assert events == []
    [(level, message)] = afterward_messages(caplog)
    assert level == logging.INFO
    assert "because the request failed with RequestValidationError" in message


# -- websocket routes ----------------------------------------------------------------------------


def websocket_scope(path: str) -> Scope:
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "server": ("test", 80),
        "subprotocols": [],
    }


async def test_a_websocket_route_runs_the_tasks_when_the_handler_returns() -> None:
    events: list[Any] = []
    app = FastAPI()

    @app.websocket("/ws")
    async def handler(websocket: WebSocket, background_tasks: BackgroundTasks) -> None:
        await websocket.accept()
        background_tasks.add_task(record, events, "task")
        await websocket.close()

    await call(app, events, websocket_scope("/ws"), [{"type": "websocket.connect"}])

    assert events == ["websocket.accept", "websocket.close", "task"]


async def test_a_websocket_route_whose_handler_raises_runs_no_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="afterward")
    events: list[Any] = []
    app = FastAPI()

    @app.websocket("/ws")
    async def handler(websocket: WebSocket, background_tasks: BackgroundTasks) -> None:
        await websocket.accept()
        background_tasks.add_task(record, events, "task")
        await websocket.receive_text()  # the client has gone: WebSocketDisconnect

    incoming: list[Message] = [
        {"type": "websocket.connect"},
        {"type": "websocket.disconnect", "code": 1001},
    ]
    with pytest.raises(WebSocketDisconnect):
        await call(app, events, websocket_scope("/ws"), incoming)

    assert events == ["websocket.accept"]
    assert afterward_messages(caplog) == [
        (
            logging.INFO,
            "Not running 1 background task(s) because the request failed with "
            f"WebSocketDisconnect: {__name__}.record.",
        )
    ]


# -- overriding and importing --------------------------------------------------------------------


async def test_dependency_overrides_replace_the_collector_and_its_tasks_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    recorded = afterward.BackgroundTasks()
    app = load(port(SEED_ANNOTATED_PIPE))
    app.dependency_overrides[get_background_tasks] = lambda: recorded

    async with client_for(app) as client:
        response = await client.post("/send-notification/foo@example.com", params={"q": "bar"})

    assert response.status_code == 200
    assert [task.args for task in recorded.tasks] == [
        ("found query: bar\n",),
        ("message to foo@example.com\n",),
    ]
    # The override's collector is the one attached to the response: replacing it loses nothing.
    assert (tmp_path / "log.txt").read_text() == "found query: bar\nmessage to foo@example.com\n"


def test_importing_afterward_does_not_import_fastapi() -> None:
    code = "import afterward, sys; assert 'fastapi' not in sys.modules, 'fastapi was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_importing_the_drop_in_without_fastapi_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)
    monkeypatch.delitem(sys.modules, "afterward.fastapi")

    with pytest.raises(ImportError, match=r"pip install 'afterward\[fastapi\]'"):
        importlib.import_module("afterward.fastapi")
