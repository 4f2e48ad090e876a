"""`inject` against the defects found by probing 0.1 (issue 5, part 2), one section each.

Like test_inject.py, no `from __future__ import annotations`: endpoints defined in the tests name
local classes in their annotations.
"""

import functools
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from typing import Annotated, Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx
import pytest
from fastapi import Depends as FastAPIDepends
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from afterward import BackgroundTasks, Depends, inject

pytestmark = pytest.mark.anyio

TIMEOUT = 10


def client_for(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def starlette_app(endpoint: Callable[..., Any], path: str = "/") -> Starlette:
    return Starlette(routes=[Route(path, inject(endpoint))])


# -- defect 1: sync `yield` teardown on a busy thread pool -----------------------------------


class Pool:
    """A connection pool of a few slots: checking out blocks the thread, with a timeout."""

    def __init__(self, size: int) -> None:
        self.slots = threading.BoundedSemaphore(size)

    def check_out(self) -> None:
        if not self.slots.acquire(timeout=3):
            raise TimeoutError("no connection came back to the pool")

    def give_back(self) -> None:
        self.slots.release()


class Session:
    """A session that checks a connection out when first used (as SQLAlchemy's does)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.connected = False

    def query(self) -> str:
        if not self.connected:
            self.pool.check_out()
            self.connected = True
        return "row"

    def close(self) -> None:
        if self.connected:
            self.pool.give_back()


async def test_sync_teardown_returns_pooled_connections_while_sync_endpoints_hold_all_threads() -> (
    None
):
    pool = Pool(2)

    def get_db() -> Iterator[Session]:
        session = Session(pool)
        try:
            yield session
        finally:
            session.close()

    def endpoint(db: Annotated[Session, Depends(get_db)]) -> dict[str, str]:
        return {"row": db.query()}

    # Fewer threads than requests: every thread can end up in an endpoint waiting for a
    # connection that only a teardown gives back.
    anyio.to_thread.current_default_thread_limiter().total_tokens = 4
    statuses: list[int] = []
    async with client_for(starlette_app(endpoint)) as client:

        async def get() -> None:
            statuses.append((await client.get("/")).status_code)

        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as group:
                for _ in range(24):
                    group.start_soon(get)
    assert statuses == [200] * 24


# -- defect 5: a cancelled request still closes its `yield` dependencies ---------------------


class CancelOnSignal:
    """ASGI middleware that cancels the request, as a timeout middleware would."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.scope = anyio.CancelScope()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self.scope:
            await self.app(scope, receive, send)


async def call_app(app: ASGIApp) -> list[MutableMapping[str, Any]]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [],
        "query_string": b"",
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def closing_dependencies(closed: list[str]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    async def async_resource() -> AsyncIterator[str]:
        try:
            yield "async"
        finally:
            await anyio.lowlevel.checkpoint()  # the first await of a cut teardown
            await anyio.lowlevel.checkpoint()
            closed.append("async")

    def sync_resource() -> Iterator[str]:
        try:
            yield "sync"
        finally:
            closed.append("sync")

    return async_resource, sync_resource


async def test_a_request_cancelled_in_the_endpoint_closes_every_yield_dependency() -> None:
    closed: list[str] = []
    async_resource, sync_resource = closing_dependencies(closed)
    started = anyio.Event()

    async def endpoint(
        a: Annotated[str, Depends(async_resource)], s: Annotated[str, Depends(sync_resource)]
    ) -> dict[str, str]:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    app = CancelOnSignal(starlette_app(endpoint))
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as group:
            group.start_soon(call_app, app)
            await started.wait()
            app.scope.cancel()
    assert sorted(closed) == ["async", "sync"]


async def test_a_request_cancelled_while_its_tasks_run_closes_every_yield_dependency(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[str] = []
    async_resource, sync_resource = closing_dependencies(closed)
    started = anyio.Event()

    async def endless() -> None:
        started.set()
        await anyio.sleep_forever()

    async def endpoint(
        tasks: BackgroundTasks,
        a: Annotated[str, Depends(async_resource)],
        s: Annotated[str, Depends(sync_resource)],
    ) -> dict[str, str]:
        tasks.add_task(endless)
        return {}

    app = CancelOnSignal(starlette_app(endpoint))
    with anyio.fail_after(TIMEOUT), caplog.at_level(logging.WARNING, "afterward"):
        async with anyio.create_task_group() as group:
            group.start_soon(call_app, app)
            await started.wait()
            app.scope.cancel()
    assert sorted(closed) == ["async", "sync"]


# -- defect 6: functools.partial dependencies and endpoints ----------------------------------


async def get_value(prefix: str, q: str) -> str:
    await anyio.lowlevel.checkpoint()
    return f"{prefix}:{q}"


def make_partial_app(framework: str, log: list[str]) -> ASGIApp:
    """The same endpoint and partial dependencies on FastAPI or on Starlette with `inject`."""
    depends: Any = FastAPIDepends if framework == "fastapi" else Depends

    async def resource(name: str) -> AsyncIterator[str]:
        log.append(f"open {name}")
        yield name
        log.append(f"close {name}")

    def sync_resource(name: str) -> Iterator[str]:
        log.append(f"open {name}")
        yield name
        log.append(f"close {name}")

    async def endpoint(
        value: Annotated[str, depends(functools.partial(get_value, "p"))],
        res: Annotated[str, depends(functools.partial(resource, "async"))],
        sync_res: Annotated[str, depends(functools.partial(sync_resource, "sync"))],
    ) -> dict[str, str]:
        return {"value": value, "res": res, "sync_res": sync_res}

    if framework == "fastapi":
        app = FastAPI()
        app.get("/")(endpoint)
        return app
    return starlette_app(endpoint)


@pytest.mark.parametrize("framework", ["fastapi", "inject"])
async def test_partial_dependencies_are_awaited_and_closed_as_fastapi_does(framework: str) -> None:
    log: list[str] = []
    async with client_for(make_partial_app(framework, log)) as client:
        response = await client.get("/?q=x")
    assert response.status_code == 200
    assert response.json() == {"value": "p:x", "res": "async", "sync_res": "sync"}
    assert sorted(log) == ["close async", "close sync", "open async", "open sync"]


async def endpoint_with_prefix(prefix: str, q: str) -> dict[str, str]:
    return {"echo": f"{prefix}{q}"}


async def returns_a_set(prefix: str) -> set[str]:
    return {prefix}


async def test_a_partial_of_an_async_endpoint_is_awaited() -> None:
    app = starlette_app(functools.partial(endpoint_with_prefix, "> "))
    async with client_for(app) as client:
        response = await client.get("/?q=hi")
    assert (response.status_code, response.json()) == (200, {"echo": "> hi"})


async def test_a_partial_endpoint_is_named_in_errors() -> None:
    app = starlette_app(functools.partial(returns_a_set, "x"))
    async with client_for(app) as client:
        with pytest.raises(TypeError, match="returns_a_set returned set"):
            await client.get("/")


def test_a_partial_is_named_in_analysis_errors() -> None:
    def bad(prefix: str, value: list[int]) -> None: ...

    with pytest.raises(TypeError, match=r"parameter 'value' of .*bad"):
        inject(functools.partial(bad, "x"))


# -- defect 7: the endpoint returns a real Response ------------------------------------------


def set_header(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """A decorator users write: change the response the endpoint returns."""

    @functools.wraps(endpoint)
    async def wrapper(request: Request) -> Response:
        response = await endpoint(request)
        response.headers["x-decorated"] = "yes"
        response.status_code = 201
        return response

    return wrapper


async def record(events: list[str], name: str) -> None:
    events.append(name)


async def test_a_decorator_can_change_the_response_when_tasks_are_queued() -> None:
    events: list[str] = []

    async def endpoint(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(record, events, "task")
        return {"ok": "yes"}

    returned: list[Response] = []
    decorated = set_header(inject(endpoint))

    async def keep(request: Request) -> Response:
        response = await decorated(request)
        returned.append(response)
        return response

    app = Starlette(routes=[Route("/", keep)])
    async with client_for(app) as client:
        response = await client.get("/")
    assert (response.status_code, response.headers["x-decorated"]) == (201, "yes")
    assert response.json() == {"ok": "yes"}
    assert events == ["task"]
    assert isinstance(returned[0], JSONResponse)


async def test_a_decorator_changes_a_copy_of_a_shared_response_not_the_response() -> None:
    shared = PlainTextResponse("cached")
    events: list[str] = []

    def resource() -> Iterator[None]:
        yield
        events.append("closed")

    async def endpoint(tasks: BackgroundTasks, _: Annotated[None, Depends(resource)]) -> Response:
        tasks.add_task(record, events, "task")
        return shared

    app = Starlette(routes=[Route("/", set_header(inject(endpoint)))])
    async with client_for(app) as client:
        first = await client.get("/")
        second = await client.get("/")
    for response in (first, second):
        assert (response.status_code, response.text) == (201, "cached")
        assert response.headers.get_list("x-decorated") == ["yes"]
    assert "x-decorated" not in shared.headers
    assert shared.status_code == 200
    assert events == ["task", "closed"] * 2


# -- defect 8: a task added in a dependency's teardown ---------------------------------------


async def test_a_task_added_after_a_dependencys_yield_runs_after_the_teardown() -> None:
    events: list[str] = []

    async def resource(tasks: BackgroundTasks) -> AsyncIterator[None]:
        yield
        events.append("teardown")
        tasks.add_task(record, events, "added in teardown")

    async def endpoint(tasks: BackgroundTasks, _: Annotated[None, Depends(resource)]) -> str:
        tasks.add_task(record, events, "added in endpoint")
        return "ok"

    async with client_for(starlette_app(endpoint)) as client:
        assert (await client.get("/")).status_code == 200
    assert events == ["added in endpoint", "teardown", "added in teardown"]


# -- defect 11: HTTPEndpoint methods ---------------------------------------------------------


def test_inject_on_an_http_endpoint_method_is_refused_with_the_fix() -> None:
    with pytest.raises(TypeError, match=r"not a method.*HTTPEndpoint.*Route\(path, inject"):

        class Items(HTTPEndpoint):
            @inject
            async def get(self, q: str) -> dict[str, str]:  # type: ignore[misc]  # pragma: no cover
                return {"q": q}


async def test_a_parameter_named_self_with_an_annotation_is_still_a_value() -> None:
    async def endpoint(self: str) -> dict[str, str]:
        return {"self": self}

    async with client_for(starlette_app(endpoint)) as client:
        assert (await client.get("/?self=me")).json() == {"self": "me"}


async def test_tasks_run_after_a_streamed_response_sent_its_final_body_message() -> None:
    events: list[str] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    async def endpoint(tasks: BackgroundTasks) -> Response:
        tasks.add_task(record, events, "task")
        return StreamingResponse(chunks())

    async with client_for(starlette_app(endpoint)) as client:
        assert (await client.get("/")).text == "ab"
    assert events == ["task"]
