"""The response `inject` builds from an endpoint's plain return value.

It is built directly (not through `JSONResponse.__init__`) and completes the request itself when
sent, so these tests hold it to what a `JSONResponse` of the same content would be and do.

No `from __future__ import annotations`: endpoints defined in the tests are analysed by `inject`.
"""

import functools
import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask as StarletteTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message

from afterward import BackgroundTasks, Depends, inject
from afterward._completion import json_response

pytestmark = pytest.mark.anyio

Endpoint = Callable[[Request], Awaitable[Response]]

CONTENTS = [
    {"message": "Message sent"},
    [],
    {},
    [1, -2, 2.5, 1e300, True, False, None],
    {"nested": {"list": [{"a": "b"}, [1, [2]]]}, "n": None},
    "a plain string",
    'é ü \u2028 \u2029 \x00 " \\ / 😀',
    {"é": "ü", "😀": ["\n\t"]},
    0,
    -7,
    1.0,
    None,
    True,
    (1, 2),
    {1: "int key", 2.5: "float key", None: "none key"},
    {False: "bool key"},
    10**40,
]


def client_for(endpoint: Endpoint) -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/", endpoint)])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.mark.parametrize("content", CONTENTS, ids=repr)
@pytest.mark.parametrize("status_code", [200, 422])
def test_the_built_response_is_the_json_response_of_the_same_content(
    content: Any, status_code: int
) -> None:
    built = json_response(content, None, None, status_code)
    stock = JSONResponse(content, status_code)
    assert isinstance(built, JSONResponse)
    assert (built.status_code, built.body, built.raw_headers, built.media_type) == (
        stock.status_code,
        stock.body,
        stock.raw_headers,
        stock.media_type,
    )
    assert built.background is None
    assert built.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "content", [float("nan"), [math.inf], {"x": -math.inf}, object(), {"key": {1, 2}}, {(1,): 1}]
)
def test_what_json_response_refuses_the_built_response_refuses_alike(content: Any) -> None:
    with pytest.raises((TypeError, ValueError)) as stock:
        JSONResponse(content)
    with pytest.raises(stock.type) as built:
        json_response(content, None, None)
    assert str(built.value) == str(stock.value)


def test_a_circular_structure_is_refused() -> None:
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(RecursionError):
        json_response(circular, None, None)


async def test_a_circular_return_value_is_a_clear_type_error_and_its_tasks_do_not_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    async def endpoint(tasks: BackgroundTasks) -> object:
        tasks.add_task(ran.append, "task")
        circular: dict[str, Any] = {}
        circular["self"] = circular
        return circular

    async with client_for(inject(endpoint)) as client:
        with pytest.raises(TypeError, match="cannot be sent as JSON"):
            await client.get("/")
    assert ran == []
    assert "append" in caplog.text


@pytest.mark.parametrize("with_task", [False, True])
async def test_the_endpoints_plain_value_is_sent_as_json_response_sends_it(
    with_task: bool,
) -> None:
    ran: list[str] = []
    content = {"é": [1, 2.5, None, True], "text": "ü \u2028"}

    async def endpoint(tasks: BackgroundTasks) -> dict[str, Any]:
        if with_task:
            tasks.add_task(ran.append, "task")
        return content

    async def stock(request: Request) -> Response:
        return JSONResponse(content)

    async with client_for(inject(endpoint)) as client:
        ours = await client.get("/")
    async with client_for(stock) as client:
        theirs = await client.get("/")
    assert (ours.status_code, ours.content) == (theirs.status_code, theirs.content)
    assert ours.headers.multi_items() == theirs.headers.multi_items()
    assert ran == (["task"] if with_task else [])


def add_background(events: list[str]) -> Callable[[Endpoint], Endpoint]:
    """A decorator that gives the returned response a `background` of its own."""

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def wrapper(request: Request) -> Response:
            response = await endpoint(request)
            response.background = StarletteTask(events.append, "decorator's background")
            return response

        return wrapper

    return decorate


@pytest.mark.parametrize("with_task", [False, True])
async def test_a_background_set_on_the_response_runs_first_then_the_tasks(
    with_task: bool,
) -> None:
    events: list[str] = []

    async def endpoint(tasks: BackgroundTasks) -> dict[str, str]:
        if with_task:
            tasks.add_task(events.append, "task")
        return {"ok": "yes"}

    async with client_for(add_background(events)(inject(endpoint))) as client:
        assert (await client.get("/")).json() == {"ok": "yes"}
    assert events == ["decorator's background"] + (["task"] if with_task else [])


async def test_a_send_that_fails_logs_the_tasks_and_closes_the_dependencies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []

    def resource() -> Iterator[None]:
        try:
            yield
        finally:
            events.append("closed")

    async def endpoint(tasks: BackgroundTasks, _: Annotated[None, Depends(resource)]) -> list[int]:
        tasks.add_task(events.append, "task")
        return [1]

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise OSError("the connection broke")

    response = await inject(endpoint)(Request(scope, receive))
    with (
        caplog.at_level(logging.WARNING, logger="afterward"),
        pytest.raises(OSError, match="broke"),
    ):
        await response(scope, receive, send)
    assert events == ["closed"]
    assert "sending the response raised OSError" in caplog.text
    assert "append" in caplog.text


async def test_the_response_is_denied_as_json_on_a_websocket_scope_as_response_does() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        raise AssertionError("not called")

    for response in (json_response([1], None, None), JSONResponse([1])):
        await response({"type": "websocket"}, receive, send)
    assert sent[:2] == sent[2:]
    assert [m["type"] for m in sent[:2]] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]


async def test_a_collector_subclass_that_overrides_call_is_run_through_its_override() -> None:
    ran: list[str] = []
    runs: list[int] = []

    class CountingTasks(BackgroundTasks):
        """A collector whose class overrides `__call__`, as a user's timing wrapper does."""

        async def __call__(self) -> None:
            runs.append(len(self.pending))
            await super().__call__()

    async def endpoint(tasks: CountingTasks) -> dict[str, str]:
        tasks.add_task(ran.append, "task")
        return {"ok": "yes"}

    async with client_for(inject(endpoint)) as client:
        assert (await client.get("/")).json() == {"ok": "yes"}
    assert (runs, ran) == ([1], ["task"])
