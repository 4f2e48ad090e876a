"""`attach`: merging tasks into a Response, and running them after any other ASGI response."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask as StarletteTask
from starlette.background import BackgroundTasks as StarletteTasks
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from typing_extensions import assert_type

from afterward import BackgroundTask, BackgroundTasks, attach

pytestmark = pytest.mark.anyio


def http_scope(**extra: Any) -> Scope:
    # spec_version 2.4: a StreamingResponse streams without polling receive() for a disconnect.
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [],
        "server": ("test", 80),
    }
    scope.update(extra)
    return scope


async def call(app: ASGIApp, events: list[str], scope: Scope | None = None) -> None:
    """Run `app` as a server would, appending every message type it sends to `events`."""

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        events.append(message["type"] + (" (more)" if message.get("more_body") else ""))

    await app(scope or http_scope(), receive, send)


START, BODY, MORE = "http.response.start", "http.response.body", "http.response.body (more)"


def record(events: list[str], item: str) -> None:
    events.append(item)


async def record_async(events: list[str], item: str) -> None:
    events.append(item)


def fail() -> None:
    raise RuntimeError("task failed")


# -- Starlette responses: merging ------------------------------------------------------------


async def test_response_without_background_carries_the_tasks_and_is_returned_itself() -> None:
    events: list[str] = []
    tasks = BackgroundTasks()
    tasks.add_task(record, events, "task")
    response = JSONResponse({"ok": True})

    assert attach(response, tasks) is response
    assert isinstance(response, JSONResponse)
    assert isinstance(response.background, BackgroundTasks)
    assert response.background.tasks == [tasks]
    await call(response, events)

    assert events == [START, BODY, "task"]


async def test_response_with_background_runs_its_own_first_then_the_attached_tasks() -> None:
    events: list[str] = []
    tasks = BackgroundTasks()
    tasks.add_task(record_async, events, "attached")
    response = PlainTextResponse("hi", background=StarletteTask(record, events, "own"))

    attach(response, tasks)
    await call(response, events)

    assert events == [START, BODY, "own", "attached"]


async def test_a_background_that_is_any_async_callable_is_kept_and_runs_first() -> None:
    events: list[str] = []

    async def own() -> None:
        events.append("own")

    tasks = BackgroundTasks()
    tasks.add_task(record, events, "attached")
    response = Response("hi")
    response.background = own  # type: ignore[assignment]  # not typed so, but Starlette calls it

    attach(response, tasks)
    await call(response, events)

    assert events == [START, BODY, "own", "attached"]


async def test_a_streaming_response_runs_the_tasks_after_its_last_chunk() -> None:
    events: list[str] = []
    tasks = BackgroundTasks()
    tasks.add_task(record, events, "task")

    async def chunks() -> Any:
        yield b"a"
        yield b"b"

    await call(attach(StreamingResponse(chunks()), tasks), events)

    assert events == [START, MORE, MORE, BODY, "task"]


class ClientLeavesMidStream:
    """A server under ASGI spec 2.3 whose client disconnects once the first chunk has been sent."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.first_chunk_sent = anyio.Event()

    async def receive(self) -> Message:
        with anyio.fail_after(5):
            await self.first_chunk_sent.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.events.append(message["type"] + (" (more)" if message.get("more_body") else ""))
        if message.get("more_body"):
            self.first_chunk_sent.set()

    async def call(self, app: ASGIApp) -> None:
        await app(
            http_scope(asgi={"version": "3.0", "spec_version": "2.3"}), self.receive, self.send
        )


async def endless_chunks() -> Any:
    yield b"first"
    await anyio.sleep_forever()  # cancelled by the response when the client leaves
    yield b"never"  # pragma: no cover


async def test_a_streaming_response_left_mid_stream_runs_no_attached_task_and_logs_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []
    tasks = BackgroundTasks()
    tasks.add_task(record, events, "task")
    response = attach(StreamingResponse(endless_chunks()), tasks)

    await ClientLeavesMidStream(events).call(response)

    assert events == [START, MORE]  # Starlette returned normally, without the final body
    assert tasks.pending == []
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "afterward"] == [
        (
            logging.WARNING,
            "Not running 1 background task(s) because the response was not completed "
            f"(the client went away): {__name__}.record.",
        )
    ]


async def test_left_mid_stream_the_response_s_own_background_still_runs_as_in_starlette() -> None:
    events: list[str] = []
    tasks = BackgroundTasks()
    tasks.add_task(record, events, "attached")
    response = StreamingResponse(
        endless_chunks(), background=StarletteTask(record, events, "own cleanup")
    )
    attach(response, tasks)

    await ClientLeavesMidStream(events).call(response)

    assert events == [START, MORE, "own cleanup"]


async def test_a_streaming_response_run_to_its_end_under_spec_2_3_runs_the_tasks() -> None:
    events: list[str] = []
    tasks = BackgroundTasks()
    tasks.add_task(record, events, "task")

    async def chunks() -> Any:
        yield b"a"

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(message: Message) -> None:
        events.append(message["type"])

    scope = http_scope(asgi={"version": "3.0", "spec_version": "2.3"})
    await attach(StreamingResponse(chunks()), tasks)(scope, receive, send)

    assert events == [START, BODY, BODY, "task"]


async def test_a_response_whose_send_raises_runs_no_attached_task_and_logs_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = BackgroundTasks()
    tasks.add_task(fail)

    async def receive() -> Message:  # pragma: no cover - a plain Response does not receive
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == BODY:
            raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        await attach(Response("hi"), tasks)(http_scope(), receive, send)

    assert tasks.pending == []
    assert (
        "Not running 1 background task(s) because the response raised OSError: "
        f"{__name__}.fail." in caplog.text
    )


def test_an_attached_response_keeps_its_class_name_and_isinstance() -> None:
    first = attach(JSONResponse({}), BackgroundTasks())
    second = attach(JSONResponse({}), BackgroundTasks())

    assert isinstance(first, JSONResponse)
    assert type(first).__name__ == "JSONResponse"
    assert type(first) is type(second)  # one subclass per response class, not per response
    assert type(attach(first, BackgroundTasks())) is type(first)  # not a subclass of a subclass


async def test_a_background_replaced_after_attach_is_what_runs_and_can_be_attached_to() -> None:
    events: list[str] = []
    response = attach(JSONResponse({}), BackgroundTasks())
    watching = type(response)

    response.background = None
    await call(response, events)
    assert events == [START, BODY]  # the user's choice: nothing attached any more

    events.clear()
    response.background = StarletteTask(record, events, "replaced")
    tasks = BackgroundTasks()
    tasks.add_task(record, events, "attached again")
    attach(response, tasks)
    await call(response, events)

    assert type(response) is watching
    assert events == [START, BODY, "replaced", "attached again"]


async def test_a_second_collector_attached_later_runs_after_the_first_and_is_watched_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []
    first, second = BackgroundTasks(), BackgroundTasks()
    first.add_task(record, events, "first")
    second.add_task(record, events, "second")
    response = attach(attach(StreamingResponse(endless_chunks()), first), second)

    await ClientLeavesMidStream(events).call(response)

    assert events == [START, MORE]
    assert f"{__name__}.record, {__name__}.record." in caplog.text


def afterward_collector(events: list[str]) -> StarletteTask:
    tasks = BackgroundTasks()
    tasks.add_task(record, events, "task")
    return tasks


def afterward_task(events: list[str]) -> StarletteTask:
    return BackgroundTask(record, events, "task")


def starlette_collector(events: list[str]) -> StarletteTask:
    tasks = StarletteTasks()
    tasks.add_task(record, events, "task")
    return tasks


def starlette_task(events: list[str]) -> StarletteTask:
    return StarletteTask(record, events, "task")


TASK_KINDS = pytest.mark.parametrize(
    "make_tasks", [afterward_collector, afterward_task, starlette_collector, starlette_task]
)


@TASK_KINDS
async def test_attaching_the_same_tasks_twice_runs_them_once(
    make_tasks: Callable[[list[str]], StarletteTask],
) -> None:
    events: list[str] = []
    tasks = make_tasks(events)
    response = Response("hi")

    attach(response, tasks)
    attach(response, tasks)
    await call(response, events)

    assert events == [START, BODY, "task"]


@TASK_KINDS
async def test_attaching_tasks_a_response_already_carries_runs_them_once(
    make_tasks: Callable[[list[str]], StarletteTask],
) -> None:
    events: list[str] = []
    tasks = make_tasks(events)
    response = Response("hi", background=tasks)

    attach(response, tasks)
    await call(response, events)

    assert events == [START, BODY, "task"]


@TASK_KINDS
async def test_attached_tasks_of_every_kind_run_after_the_response_s_own(
    make_tasks: Callable[[list[str]], StarletteTask],
) -> None:
    events: list[str] = []
    response = Response("hi", background=StarletteTask(record, events, "own"))

    attach(response, make_tasks(events))
    await call(response, events)

    assert events == [START, BODY, "own", "task"]


async def test_several_attached_collectors_run_in_order_each_once() -> None:
    events: list[str] = []
    first, second = BackgroundTasks(), StarletteTasks()
    first.add_task(record, events, "first")
    second.add_task(record, events, "second")
    response = Response("hi")

    attach(response, first)
    attach(response, second)
    attach(response, first)
    attach(response, second)
    await call(response, events)

    assert events == [START, BODY, "first", "second"]


async def test_a_starlette_collector_gets_afterward_error_isolation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []
    tasks = StarletteTasks()
    tasks.add_task(fail)
    tasks.add_task(record, events, "next")

    await call(attach(Response("hi"), tasks), events)

    assert events == [START, BODY, "next"]
    assert f"Background task {__name__}.fail failed" in caplog.text


async def test_a_task_added_to_a_starlette_collector_after_attach_still_runs() -> None:
    events: list[str] = []
    tasks = StarletteTasks()
    response = attach(Response("hi"), tasks)
    tasks.add_task(record, events, "late")

    await call(response, events)

    assert events == [START, BODY, "late"]


async def test_json_response_accepts_an_afterward_collector_as_background() -> None:
    events: list[str] = []
    tasks = BackgroundTasks()
    tasks.add_task(record, events, "sync")
    tasks.add_task(record_async, events, "async")
    tasks.add_task(fail)
    tasks.add_task(record, events, "after the failure")

    await call(JSONResponse({"message": "sent"}, background=tasks), events)

    assert events == [START, BODY, "sync", "async", "after the failure"]


def test_attach_keeps_the_response_type_for_type_checkers() -> None:
    response = attach(JSONResponse({}), BackgroundTasks())
    assert_type(response, JSONResponse)
    assert isinstance(response, JSONResponse)


# -- any ASGI app or response: wrapping ------------------------------------------------------


def chunked_app(*, finish: bool = True) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        if finish:
            await send({"type": "http.response.body", "body": b"b"})

    return app


async def test_an_asgi_app_runs_the_tasks_after_its_final_body_message() -> None:
    events: list[str] = []
    tasks = BackgroundTasks()
    tasks.add_task(record, events, "task")
    app = chunked_app()

    wrapped = attach(app, tasks)
    assert_type(wrapped, ASGIApp)
    assert wrapped is not app
    await call(wrapped, events)

    assert events == [START, MORE, BODY, "task"]


async def test_an_asgi_app_runs_a_single_starlette_task() -> None:
    events: list[str] = []

    await call(attach(chunked_app(), StarletteTask(record, events, "task")), events)

    assert events == [START, MORE, BODY, "task"]


async def test_an_asgi_app_that_raises_runs_no_task_and_logs_them_by_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []
    tasks = BackgroundTasks()
    tasks.add_task(record, events, "task")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await call(attach(app, tasks), events)

    assert events == [START]
    assert tasks.pending == []  # settled: they will not run later either
    [record_] = [r for r in caplog.records if r.name == "afterward"]
    assert record_.levelno == logging.WARNING
    assert record_.getMessage() == (
        "Not running 1 background task(s) because the response raised RuntimeError: "
        f"{__name__}.record."
    )


async def test_an_asgi_app_that_does_not_finish_the_response_runs_no_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []
    tasks = BackgroundTasks()
    tasks.add_task(record_async, events, "task")

    await call(attach(chunked_app(finish=False), tasks), events)

    assert events == [START, MORE]
    assert (
        "Not running 1 background task(s) because the response was not completed "
        f"(the client went away): {__name__}.record_async." in caplog.text
    )


async def test_a_final_body_message_the_server_could_not_send_does_not_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []
    tasks = BackgroundTasks()
    tasks.add_task(record, events, "task")

    async def receive() -> Message:
        raise AssertionError("not called")

    async def send(message: Message) -> None:
        if message["type"] == BODY:
            raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        await attach(chunked_app(), tasks)(http_scope(), receive, send)

    assert events == []
    assert f"because the response raised OSError: {__name__}.record." in caplog.text


async def test_a_pathsend_message_completes_the_response() -> None:
    events: list[str] = []
    tasks = BackgroundTasks()
    tasks.add_task(record, events, "task")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": "/tmp/file"})

    await call(attach(app, tasks), events)

    assert events == [START, "http.response.pathsend", "task"]


async def test_a_wrapped_app_runs_each_task_at_most_once() -> None:
    events: list[str] = []
    tasks = BackgroundTasks()
    tasks.add_task(record, events, "task")
    wrapped = attach(chunked_app(), tasks)

    await call(wrapped, events)
    await call(wrapped, events)

    assert events == [START, MORE, BODY, "task", START, MORE, BODY]


def websocket_scope() -> Scope:
    return {"type": "websocket", "asgi": {"version": "3.0"}, "path": "/ws", "headers": []}


async def test_a_websocket_app_runs_the_tasks_when_it_returns() -> None:
    events: list[str] = []
    tasks = BackgroundTasks()
    tasks.add_task(record, events, "task")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})

    await call(attach(app, tasks), events, websocket_scope())

    assert events == ["websocket.accept", "websocket.close", "task"]


async def test_a_websocket_app_that_raises_runs_no_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []
    tasks = BackgroundTasks()
    tasks.add_task(record, events, "task")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "websocket.accept"})
        raise ConnectionError("gone")

    with pytest.raises(ConnectionError):
        await call(attach(app, tasks), events, websocket_scope())

    assert events == ["websocket.accept"]
    assert "because the response raised ConnectionError" in caplog.text


async def test_a_starlette_endpoint_may_return_a_wrapped_asgi_response() -> None:
    events: list[str] = []

    async def endpoint(request: Request) -> Response:
        tasks = BackgroundTasks()
        tasks.add_task(record, events, "task")
        # Starlette sends whatever ASGI callable the endpoint returns.
        return attach(chunked_app(), tasks)  # type: ignore[return-value]

    app = Starlette(routes=[Route("/", endpoint)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/")

    assert response.content == b"ab"
    assert events == ["task"]


def test_a_wrapped_app_names_the_app_and_the_tasks_in_its_repr() -> None:
    tasks = BackgroundTasks()
    tasks.add_task(record, [], "task")

    assert f"{__name__}.record" in repr(attach(chunked_app(), tasks))


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tasks", [42, None, record, "tasks"])
def test_tasks_that_are_not_a_background_task_are_a_type_error(tasks: Any) -> None:
    with pytest.raises(TypeError, match=r"attach\(\) needs the tasks as an afterward") as info:
        attach(Response(), tasks)
    assert "attach(response, background_tasks)" in str(info.value)


def test_tasks_and_response_in_the_wrong_order_are_a_type_error() -> None:
    tasks = BackgroundTasks()
    with pytest.raises(TypeError, match=r"response first and the tasks second"):
        attach(tasks, StarletteTask(record, [], "x"))  # type: ignore[arg-type]


def test_a_response_class_instead_of_an_instance_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"attach\(JSONResponse\(content\), tasks\)"):
        attach(JSONResponse, BackgroundTasks())  # type: ignore[arg-type]


def test_a_response_that_is_not_callable_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"needs a Starlette Response or an ASGI app"):
        attach("hello", BackgroundTasks())  # type: ignore[call-overload]
