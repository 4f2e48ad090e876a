"""`inject`: parameter resolution, dependencies, responses and when the tasks run.

No `from __future__ import annotations` here, unlike the rest of the code: the endpoints are
defined inside the tests and their annotations name local classes and functions, which (as in
FastAPI) string annotations could not resolve. One test covers that case on purpose.
"""

import contextlib
import contextvars
import functools
import inspect
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from typing import Annotated, Any, Optional, Union

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask as StarletteTask
from starlette.background import BackgroundTasks as StarletteTasks
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket

from afterward import BackgroundTasks, Depends, inject

pytestmark = pytest.mark.anyio


def client_for(*routes: Route) -> httpx.AsyncClient:
    app = Starlette(routes=list(routes))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def serve_directly(
    endpoint: Callable[..., Any], send: Callable[[MutableMapping[str, Any]], Awaitable[None]]
) -> None:
    """Call an `inject` endpoint and send its response the way Starlette does, with `send`."""
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [],
        "query_string": b"",
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    response = await inject(endpoint)(Request(scope, receive))
    await response(scope, receive, send)


async def client_went_away(message: MutableMapping[str, Any]) -> None:
    raise OSError("client went away")


# -- the request's collector ---------------------------------------------------------------


async def test_one_collector_is_shared_by_endpoint_dependencies_and_sub_dependencies() -> None:
    seen: list[BackgroundTasks] = []

    def sub(tasks: BackgroundTasks) -> None:
        seen.append(tasks)

    async def dep(tasks: BackgroundTasks, _: None = Depends(sub)) -> None:
        seen.append(tasks)

    async def endpoint(tasks: BackgroundTasks, _: Annotated[None, Depends(dep)]) -> dict[str, int]:
        seen.append(tasks)
        return {}

    async with client_for(Route("/", inject(endpoint))) as client:
        await client.get("/")
        await client.get("/")
    assert len(seen) == 6
    assert seen[0] is seen[1] is seen[2]
    assert seen[3] is seen[4] is seen[5]
    assert seen[0] is not seen[3]


async def test_tasks_from_dependencies_and_endpoint_run_in_the_order_they_were_added() -> None:
    ran: list[str] = []

    def get_query(background_tasks: BackgroundTasks, q: str | None = None) -> str | None:
        if q:
            background_tasks.add_task(ran.append, f"found query: {q}")
        return q

    async def send(
        email: str, background_tasks: BackgroundTasks, q: Annotated[str, Depends(get_query)]
    ) -> dict[str, str]:
        background_tasks.add_task(ran.append, f"message to {email}")
        return {"message": "Message sent"}

    async with client_for(Route("/send/{email}", inject(send), methods=["POST"])) as client:
        response = await client.post("/send/a@example.com", params={"q": "x"})
    assert response.status_code == 200
    assert response.json() == {"message": "Message sent"}
    assert ran == ["found query: x", "message to a@example.com"]


async def test_a_subclass_annotation_gets_an_instance_of_that_subclass() -> None:
    class MyTasks(BackgroundTasks):
        pass

    seen: list[object] = []

    def dep(tasks: StarletteTasks) -> None:
        seen.append(tasks)

    async def endpoint(tasks: MyTasks, _: None = Depends(dep)) -> None:
        seen.append(tasks)

    async with client_for(Route("/", inject(endpoint))) as client:
        await client.get("/")
    assert type(seen[0]) is MyTasks
    assert seen[0] is seen[1]


def test_incompatible_collector_classes_are_refused_at_decoration_time() -> None:
    class A(BackgroundTasks):
        pass

    class B(BackgroundTasks):
        pass

    def dep(tasks: A) -> None:
        pass

    def endpoint(tasks: B, _: None = Depends(dep)) -> None:
        pass

    with pytest.raises(TypeError, match="One request has one collector"):
        inject(endpoint)


# -- request and dependencies ----------------------------------------------------------------


async def test_request_and_http_connection_parameters_get_the_request() -> None:
    seen: list[object] = []

    async def endpoint(request: Request, connection: HTTPConnection) -> str:
        seen.extend([request, connection])
        return request.url.path

    async with client_for(Route("/here", inject(endpoint))) as client:
        response = await client.get("/here")
    assert response.json() == "/here"
    assert seen[0] is seen[1]


async def test_dependency_results_are_cached_per_request_unless_use_cache_is_false() -> None:
    calls: list[str] = []

    def counted() -> int:
        calls.append("cached")
        return len(calls)

    def uncached() -> int:
        calls.append("uncached")
        return len(calls)

    async def endpoint(
        a: Annotated[int, Depends(counted)],
        b: int = Depends(counted),
        c: int = Depends(uncached, use_cache=False),
        d: Annotated[int, Depends(uncached, use_cache=False)] = 0,
    ) -> list[int]:
        return [a, b, c, d]

    async with client_for(Route("/", inject(endpoint))) as client:
        first = (await client.get("/")).json()
        second = (await client.get("/")).json()
    assert first == [1, 1, 2, 3]
    assert second == [4, 4, 5, 6]


async def test_sync_dependencies_and_endpoints_run_in_threads_async_ones_on_the_loop() -> None:
    threads: dict[str, int] = {}

    def sync_dep() -> None:
        threads["sync_dep"] = threading.get_ident()

    async def async_dep() -> None:
        threads["async_dep"] = threading.get_ident()

    def endpoint(_: None = Depends(sync_dep), __: None = Depends(async_dep)) -> None:
        threads["endpoint"] = threading.get_ident()

    async with client_for(Route("/", inject(endpoint))) as client:
        threads["loop"] = threading.get_ident()
        assert (await client.get("/")).status_code == 200
    assert threads["async_dep"] == threads["loop"]
    assert threads["sync_dep"] != threads["loop"]
    assert threads["endpoint"] != threads["loop"]


async def test_depends_without_argument_calls_the_annotation() -> None:
    class Settings:
        def __init__(self, request: Request) -> None:
            self.path = request.url.path

    async def endpoint(settings: Annotated[Settings, Depends()]) -> str:
        return settings.path

    async with client_for(Route("/s", inject(endpoint))) as client:
        assert (await client.get("/s")).json() == "/s"


async def test_callable_instances_can_be_dependencies() -> None:
    class Multiplier:
        def __init__(self, factor: int) -> None:
            self.factor = factor

        async def __call__(self, n: int) -> int:
            return n * self.factor

    async def endpoint(result: Annotated[int, Depends(Multiplier(3))]) -> int:
        return result

    async with client_for(Route("/", inject(endpoint))) as client:
        assert (await client.get("/", params={"n": 7})).json() == 21


async def test_positional_only_parameters_are_passed_by_position() -> None:
    async def endpoint(a: int, /, b: int) -> int:
        return a - b

    async with client_for(Route("/", inject(endpoint))) as client:
        assert (await client.get("/", params={"a": 5, "b": 2})).json() == 3


def _doubled(n: int) -> int:
    return 2 * n


async def _async_endpoint(
    a: int,
    /,
    d: Annotated[int, Depends(_doubled)],
    tasks: BackgroundTasks,
    *,
    b: str,
    request: Request,
    e: Annotated[int, Depends(_doubled)],
) -> list[Any]:
    return [a, d, type(tasks).__name__, b, request.url.path, e]


def _sync_endpoint(
    a: int,
    /,
    d: Annotated[int, Depends(_doubled)],
    tasks: BackgroundTasks,
    *,
    b: str,
    request: Request,
    e: Annotated[int, Depends(_doubled)],
) -> list[Any]:
    return [a, d, type(tasks).__name__, b, request.url.path, e]


@pytest.mark.parametrize("endpoint", [_async_endpoint, _sync_endpoint])
async def test_each_kind_of_parameter_gets_its_own_value_by_position_or_keyword(
    endpoint: Callable[..., Any],
) -> None:
    # Values are resolved dependencies first, then the rest, and passed in the signature's
    # order: positional-only and plain ones by position, keyword-only ones by name.
    async with client_for(Route("/p", inject(endpoint))) as client:
        response = await client.get("/p", params={"a": 5, "n": 7, "b": "x"})
    assert response.json() == [5, 14, "BackgroundTasks", "x", "/p", 14]


async def test_keyword_only_parameters_of_a_generator_dependency_get_their_values() -> None:
    ran: list[str] = []

    async def session(*, name: str, tasks: BackgroundTasks) -> AsyncIterator[str]:
        tasks.add_task(ran.append, name)
        yield name.upper()

    async def endpoint(s: Annotated[str, Depends(session)], n: int) -> list[Any]:
        return [s, n]

    async with client_for(Route("/", inject(endpoint))) as client:
        assert (await client.get("/", params={"name": "ada", "n": 1})).json() == ["ADA", 1]
    assert ran == ["ada"]


# -- generator dependencies ----------------------------------------------------------------------


async def test_generator_dependency_teardown_runs_after_the_background_tasks() -> None:
    events: list[str] = []

    def session() -> Iterator[dict[str, bool]]:
        resource = {"open": True}
        events.append("open")
        yield resource
        resource["open"] = False
        events.append("close")

    async def async_session() -> AsyncIterator[str]:
        events.append("async open")
        yield "async"
        events.append("async close")

    def use(resource: dict[str, bool]) -> None:
        events.append(f"task sees open={resource['open']}")

    async def endpoint(
        tasks: BackgroundTasks,
        resource: Annotated[dict[str, bool], Depends(session)],
        other: Annotated[str, Depends(async_session)],
    ) -> None:
        tasks.add_task(use, resource)

    async with client_for(Route("/", inject(endpoint))) as client:
        assert (await client.get("/")).status_code == 200
    assert events == ["open", "async open", "task sees open=True", "async close", "close"]


async def test_generator_dependency_sees_the_endpoint_exception_and_tasks_do_not_run() -> None:
    events: list[str] = []

    async def guarded() -> AsyncIterator[None]:
        try:
            yield
        except ValueError as exc:
            events.append(f"teardown saw {exc}")
            raise

    def sync_guarded() -> Iterator[None]:
        try:
            yield
        except ValueError:
            events.append("sync teardown saw it")
            raise

    async def endpoint(
        tasks: BackgroundTasks, _: None = Depends(guarded), __: None = Depends(sync_guarded)
    ) -> None:
        tasks.add_task(events.append, "task ran")
        raise ValueError("boom")

    async with client_for(Route("/", inject(endpoint))) as client:
        with pytest.raises(ValueError, match="boom"):
            await client.get("/")
    assert events == ["sync teardown saw it", "teardown saw boom"]


async def test_a_generator_dependency_that_swallows_the_error_does_not_hide_it() -> None:
    def swallowing() -> Iterator[None]:
        with contextlib.suppress(ValueError):
            yield

    async def endpoint(_: None = Depends(swallowing)) -> None:
        raise ValueError("still raised")

    async with client_for(Route("/", inject(endpoint))) as client:
        with pytest.raises(ValueError, match="still raised"):
            await client.get("/")


# -- path and query values ---------------------------------------------------------------------


async def test_values_come_from_the_path_then_the_query_and_are_converted() -> None:
    async def endpoint(  # type: ignore[no-untyped-def]  # `raw` is unannotated on purpose
        item_id: int,
        name: str,
        price: float,
        active: bool,
        note: str | None = None,
        count: Optional[int] = None,  # noqa: UP045 -- the spelling is what is tested
        limit: Union[int, None] = 10,  # noqa: UP007
        raw="untyped",
    ) -> dict[str, Any]:
        return {
            "item_id": item_id,
            "name": name,
            "price": price,
            "active": active,
            "note": note,
            "count": count,
            "limit": limit,
            "raw": raw,
        }

    async with client_for(Route("/items/{item_id:int}/{name}", inject(endpoint))) as client:
        response = await client.get(
            "/items/3/widget", params={"price": "2.5", "active": "yes", "count": "4"}
        )
    assert response.json() == {
        "item_id": 3,
        "name": "widget",
        "price": 2.5,
        "active": True,
        "note": None,
        "count": 4,
        "limit": 10,
        "raw": "untyped",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("On", True), ("no", False), ("0", False), ("off", False)],
)
async def test_bool_query_values_accept_the_usual_spellings(text: str, expected: bool) -> None:
    async def endpoint(flag: bool) -> bool:
        return flag

    async with client_for(Route("/", inject(endpoint))) as client:
        assert (await client.get("/", params={"flag": text})).json() is expected


async def test_missing_and_unconvertible_values_answer_422_naming_each_parameter() -> None:
    async def endpoint(email: str, n: int, ratio: float, flag: bool, q: str) -> None:
        raise AssertionError("the endpoint must not be called")

    async with client_for(Route("/u/{email}", inject(endpoint))) as client:
        response = await client.get("/u/x", params={"n": "ten", "ratio": "half", "flag": "maybe"})
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "type": "int_parsing",
                "loc": ["query", "n"],
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": "ten",
            },
            {
                "type": "float_parsing",
                "loc": ["query", "ratio"],
                "msg": "Input should be a valid number, unable to parse string as a number",
                "input": "half",
            },
            {
                "type": "bool_parsing",
                "loc": ["query", "flag"],
                "msg": "Input should be a valid boolean, unable to interpret input",
                "input": "maybe",
            },
            {"type": "missing", "loc": ["query", "q"], "msg": "Field required", "input": None},
        ]
    }


async def test_a_422_skips_the_endpoint_and_logs_tasks_added_by_dependencies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []
    called: list[str] = []

    def adds(tasks: BackgroundTasks) -> None:
        tasks.add_task(ran.append, "x")

    def needs_n(n: int) -> int:
        called.append("needs_n")
        return n

    async def endpoint(_: None = Depends(adds), n: int = Depends(needs_n)) -> None:
        called.append("endpoint")

    caplog.set_level(logging.INFO, logger="afterward")
    async with client_for(Route("/", inject(endpoint))) as client:
        response = await client.get("/", params={"n": "x"})
    assert response.status_code == 422
    assert ran == []
    assert called == []
    assert "Not running 1 background task(s)" in caplog.text
    assert "list.append" in caplog.text


# -- decoration-time errors ----------------------------------------------------------------------


def test_unsupported_annotation_is_a_type_error_naming_the_parameter() -> None:
    def endpoint(ids: list[int]) -> None:
        pass

    with pytest.raises(TypeError, match=r"parameter 'ids' of .*endpoint.*list\[int\]"):
        inject(endpoint)


def test_unsupported_annotation_in_a_dependency_is_refused_too() -> None:
    def dep(data: dict[str, int]) -> None:
        pass

    def endpoint(_: None = Depends(dep)) -> None:
        pass

    with pytest.raises(TypeError, match=r"parameter 'data' of .*dep"):
        inject(endpoint)


@pytest.mark.parametrize("kind", ["args", "kwargs"])
def test_star_parameters_are_refused(kind: str) -> None:
    def with_args(*args: str) -> None:
        pass

    def with_kwargs(**kwargs: str) -> None:
        pass

    with pytest.raises(TypeError, match=f"parameter '{kind}'"):
        inject(with_args if kind == "args" else with_kwargs)


def test_depends_declared_twice_is_refused() -> None:
    def dep() -> int:
        return 1

    def endpoint(x: Annotated[int, Depends(dep)] = Depends(dep)) -> None:
        pass

    with pytest.raises(TypeError, match="more than once"):
        inject(endpoint)


def test_depends_without_callable_on_a_non_callable_annotation_is_refused() -> None:
    def endpoint(x: Annotated[int | None, Depends()]) -> None:
        pass

    with pytest.raises(TypeError, match="Depends\\(\\) without a callable"):
        inject(endpoint)


def test_depends_given_a_call_result_explains_the_mistake() -> None:
    with pytest.raises(TypeError, match=r"Depends\(get_value\), not Depends\(get_value\(\)\)"):
        Depends(42)  # type: ignore[arg-type]


def test_websocket_parameters_are_refused() -> None:
    def endpoint(ws: WebSocket) -> None:
        pass

    with pytest.raises(TypeError, match="HTTP endpoints"):
        inject(endpoint)


def test_inject_refuses_non_functions() -> None:
    with pytest.raises(TypeError, match="takes a function"):
        inject(42)  # type: ignore[arg-type]


def test_unresolvable_string_annotations_are_a_type_error() -> None:
    def endpoint(x: "NotDefinedAnywhere") -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    with pytest.raises(TypeError, match="cannot read the annotation of parameter 'x'"):
        inject(endpoint)


async def test_string_annotations_of_depends_parameters_need_not_resolve() -> None:
    def local_dep() -> int:
        return 5

    def endpoint(x: "LocalType" = Depends(local_dep)) -> int:  # type: ignore[name-defined]  # noqa: F821
        return int(x)

    async with client_for(Route("/", inject(endpoint))) as client:
        assert (await client.get("/")).json() == 5


def test_circular_dependencies_are_refused() -> None:
    def a(x: Any = None) -> None:
        pass

    def b(y: None = Depends(a)) -> None:
        pass

    a.__signature__ = __import__("inspect").Signature(  # type: ignore[attr-defined]
        [
            __import__("inspect").Parameter(
                "x", __import__("inspect").Parameter.KEYWORD_ONLY, default=Depends(b)
            )
        ]
    )
    with pytest.raises(TypeError, match="circular dependency"):
        inject(b)


def test_the_route_keeps_the_endpoint_name() -> None:
    async def send_notification() -> None:
        pass

    app = Starlette(routes=[Route("/x", inject(send_notification))])
    assert app.url_path_for("send_notification") == "/x"


# -- responses ---------------------------------------------------------------------------------


async def test_returned_response_is_sent_as_is_and_tasks_run_after_it() -> None:
    ran: list[str] = []

    async def endpoint(tasks: BackgroundTasks) -> Response:
        tasks.add_task(ran.append, "task")
        return PlainTextResponse("custom", status_code=201, headers={"x-a": "b"})

    async with client_for(Route("/", inject(endpoint))) as client:
        response = await client.get("/")
    assert (response.status_code, response.text, response.headers["x-a"]) == (201, "custom", "b")
    assert ran == ["task"]


async def test_a_response_with_its_own_background_runs_both_its_own_first() -> None:
    ran: list[str] = []
    shared = PlainTextResponse("cached", background=StarletteTask(ran.append, "own"))

    async def endpoint(tasks: BackgroundTasks) -> Response:
        tasks.add_task(ran.append, "injected")
        return shared

    async with client_for(Route("/", inject(endpoint))) as client:
        await client.get("/")
        await client.get("/")
    assert ran == ["own", "injected", "own", "injected"]
    assert isinstance(shared.background, StarletteTask)  # never mutated


async def test_a_response_carrying_the_injected_collector_runs_it_once() -> None:
    ran: list[str] = []

    async def endpoint(background_tasks: BackgroundTasks) -> Response:
        background_tasks.add_task(ran.append, "once")
        return JSONResponse({"ok": True}, background=background_tasks)

    async with client_for(Route("/", inject(endpoint))) as client:
        assert (await client.get("/")).json() == {"ok": True}
    assert ran == ["once"]


async def test_non_json_return_value_is_a_clear_type_error() -> None:
    async def endpoint(tasks: BackgroundTasks) -> object:
        tasks.add_task(print)
        return object()

    async with client_for(Route("/", inject(endpoint))) as client:
        with pytest.raises(TypeError, match="cannot be sent as JSON"):
            await client.get("/")


async def test_tasks_run_after_the_final_body_message_is_sent() -> None:
    order: list[str] = []

    async def endpoint(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(order.append, "task")
        return {"a": "b"}

    async def send(message: MutableMapping[str, Any]) -> None:
        order.append(message["type"])

    await serve_directly(endpoint, send)
    assert order == ["http.response.start", "http.response.body", "task"]


# -- when the endpoint raises --------------------------------------------------------------------


async def test_http_exception_is_handled_by_starlette_and_tasks_do_not_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    def send_email(to: str) -> None:
        ran.append(to)

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(send_email, "a@example.com")
        raise HTTPException(404, "no such thing")

    caplog.set_level(logging.INFO, logger="afterward")
    async with client_for(Route("/", inject(endpoint))) as client:
        response = await client.get("/")
    assert (response.status_code, response.text) == (404, "no such thing")
    assert ran == []
    record = next(r for r in caplog.records if "Not running" in r.getMessage())
    assert record.levelno == logging.INFO
    assert "send_email" in record.getMessage()
    assert "HTTPException" in record.getMessage()


async def test_an_unexpected_exception_propagates_and_its_tasks_are_logged_as_not_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def send_email() -> None:
        raise AssertionError("must not run")

    def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(send_email)
        raise RuntimeError("endpoint failed")

    async with client_for(Route("/", inject(endpoint))) as client:
        with pytest.raises(RuntimeError, match="endpoint failed"):
            await client.get("/")
    record = next(r for r in caplog.records if "Not running" in r.getMessage())
    assert record.levelno == logging.WARNING
    assert "send_email" in record.getMessage()


async def test_a_failing_task_still_answers_200_and_the_next_task_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    def broken() -> None:
        raise ValueError("task failed")

    async def endpoint(tasks: BackgroundTasks) -> dict[str, bool]:
        tasks.add_task(broken)
        tasks.add_task(ran.append, "next")
        return {"ok": True}

    async with client_for(Route("/", inject(endpoint))) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert ran == ["next"]
    assert "broken failed" in caplog.text


# -- context -----------------------------------------------------------------------------------

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


async def test_a_contextvar_set_in_a_sync_dependency_is_seen_by_the_task() -> None:
    seen: list[str] = []

    def set_request_id(tasks: BackgroundTasks, rid: str) -> None:
        request_id.set(rid)
        tasks.add_task(lambda: seen.append(request_id.get()))

    def endpoint(_: None = Depends(set_request_id)) -> None:
        pass

    async with client_for(Route("/", inject(endpoint))) as client:
        await client.get("/", params={"rid": "abc"})
    assert seen == ["abc"]


async def test_when_sending_the_response_fails_tasks_are_logged_and_dependencies_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []

    def resource() -> Iterator[None]:
        try:
            yield
        except OSError:
            events.append("teardown saw OSError")
            raise

    def send_email() -> None:
        events.append("task ran")

    async def endpoint(tasks: BackgroundTasks, _: None = Depends(resource)) -> dict[str, str]:
        tasks.add_task(send_email)
        return {"a": "b"}

    with pytest.raises(OSError, match="client went away"):
        await serve_directly(endpoint, client_went_away)
    assert events == ["teardown saw OSError"]
    assert "Not running 1 background task(s) because sending the response raised OSError" in (
        caplog.text
    )
    assert "send_email" in caplog.text


async def test_path_convertor_values_are_accepted_or_converted() -> None:
    async def endpoint(ratio: float, label: str, flag: bool = True) -> list[Any]:
        return [ratio, label, flag]

    async with client_for(Route("/{ratio:float}/{label:int}", inject(endpoint))) as client:
        assert (await client.get("/1.5/7")).json() == [1.5, "7", True]


def test_depends_markers_describe_themselves() -> None:
    def get_db() -> None:
        pass

    assert repr(Depends(get_db)) == f"Depends({get_db.__qualname__})"
    assert repr(Depends(get_db, use_cache=False)).endswith(", use_cache=False)")


async def test_a_failing_task_in_the_responses_own_background_is_isolated_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    def broken() -> None:
        raise ValueError("own task failed")

    own = StarletteTasks()
    own.add_task(broken)
    own.add_task(ran.append, "own second")
    shared = PlainTextResponse("cached", background=own)

    async def endpoint(tasks: BackgroundTasks) -> Response:
        tasks.add_task(ran.append, "injected")
        return shared

    async with client_for(Route("/", inject(endpoint))) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert ran == ["own second", "injected"]
    assert "broken failed" in caplog.text
    assert shared.background is own


async def test_tasks_of_a_built_json_response_that_fails_to_send_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def send_email() -> None:
        raise AssertionError("must not run")

    async def endpoint(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(send_email)
        return {"a": "b"}

    with pytest.raises(OSError, match="client went away"):
        await serve_directly(endpoint, client_went_away)
    assert "Not running 1 background task(s)" in caplog.text
    assert "send_email" in caplog.text


async def test_a_shared_dependency_with_an_invalid_value_is_reported_once() -> None:
    def page(n: int) -> int:
        return n

    async def endpoint(a: int = Depends(page), b: int = Depends(page)) -> None:
        raise AssertionError("the endpoint must not be called")

    async with client_for(Route("/", inject(endpoint))) as client:
        response = await client.get("/", params={"n": "x"})
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["query", "n"]]


def _keywords_only(func: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator whose wrapper takes keywords alone, as FastAPI calls endpoints."""

    @functools.wraps(func)
    async def wrapper(**kwargs: Any) -> Any:
        return await func(**kwargs)

    return wrapper


@_keywords_only
async def _wrapped_endpoint(n: int, tasks: BackgroundTasks) -> list[Any]:
    return [n, type(tasks).__name__]


class _KeywordModel:
    """Like a pydantic model: takes keywords alone, and shows its fields as its signature."""

    __signature__ = inspect.Signature(
        [inspect.Parameter("n", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=int)]
    )

    def __init__(self, **fields: Any) -> None:
        self.n: int = fields["n"]


async def test_a_wrapper_or_a_class_that_takes_keywords_alone_gets_keywords() -> None:
    async def uses_model(model: Annotated[_KeywordModel, Depends(_KeywordModel)]) -> int:
        return model.n

    async with client_for(
        Route("/wrapped", inject(_wrapped_endpoint)), Route("/model", inject(uses_model))
    ) as client:
        assert (await client.get("/wrapped", params={"n": 3})).json() == [3, "BackgroundTasks"]
        assert (await client.get("/model", params={"n": 4})).json() == 4
