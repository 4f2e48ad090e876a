"""afterward.Backend: checked at add_task, handed the tasks before or after the response, 503."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Sequence

import anyio
import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket

import afterward
from afterward import Backend, BackgroundTask, BackgroundTasks, BackgroundTasksMiddleware
from afterward.fastapi import BackgroundTasks as FastAPITasks
from test_middleware import client, running

pytestmark = pytest.mark.anyio


def send_email(to: str) -> None:
    raise AssertionError("a backend's tasks never run in the web process")


async def notify(user: int) -> None:
    raise AssertionError("a backend's tasks never run in the web process")


class ListBackend(Backend):
    """Records what it is handed; can be made to fail, or to hang, or to refuse names."""

    def __init__(self, *, handoff: str = "before_response") -> None:
        self.handoff = handoff  # type: ignore[assignment]
        self.batches: list[list[tuple[str, tuple[object, ...]]]] = []
        self.fail: Exception | None = None
        self.hang = False
        self.seen: list[Message] | None = None  # what the client had received at each enqueue
        self.sent_before: list[int] = []

    def validate(self, task: BackgroundTask) -> None:
        super().validate(task)
        if task.args and task.args[0] == "refused":
            raise TypeError("ListBackend refuses 'refused'.")

    async def enqueue(self, tasks: Sequence[BackgroundTask]) -> None:
        if self.seen is not None:
            self.sent_before.append(len(self.seen))
        if self.hang:
            await anyio.sleep_forever()
        if self.fail is not None:
            raise self.fail
        self.batches.append([(task.name, tuple(task.args)) for task in tasks])


class SyncOnly(ListBackend):
    supports_async = False


def app_adding(*calls: tuple[object, ...], streaming: bool = False, status: int = 200) -> Starlette:
    async def endpoint(request: Request) -> Response:
        tasks = afterward.current_tasks()
        for func, *args in calls:
            tasks.add_task(func, *args)  # type: ignore[arg-type]
        if streaming:

            async def body() -> AsyncIterator[bytes]:
                yield b"first "
                tasks.add_task(send_email, "late@example.com")  # after the response started
                yield b"second"

            return StreamingResponse(body())
        return PlainTextResponse("done", status_code=status)

    return Starlette(routes=[Route("/", endpoint, methods=["POST"])])


def test_backend_is_abstract_and_exported() -> None:
    assert "Backend" in afterward.__all__
    with pytest.raises(TypeError):
        Backend()  # type: ignore[abstract]


def test_a_backend_that_is_not_one_is_refused_with_what_to_pass() -> None:
    with pytest.raises(TypeError, match=r"afterward\.Backend instance"):
        BackgroundTasks(backend=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"afterward\.Backend instance"):
        BackgroundTasksMiddleware(app_adding(), backend="celery")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="handoff"):
        BackgroundTasks(backend=ListBackend(handoff="later"))


def test_add_task_asks_the_backend_to_validate_in_the_request() -> None:
    tasks = BackgroundTasks(backend=ListBackend())
    tasks.add_task(send_email, "a@example.com")
    with pytest.raises(TypeError, match="refuses 'refused'"):
        tasks.add_task(send_email, "refused")
    assert [task.args for task in tasks.tasks] == [("a@example.com",)]


def test_capability_flags_refuse_what_the_backend_cannot_do() -> None:
    tasks = BackgroundTasks(backend=SyncOnly())
    with pytest.raises(TypeError, match="cannot run async functions"):
        tasks.add_task(notify, 1)
    with pytest.raises(TypeError, match="cannot retry tasks"):
        tasks.add_task(afterward.task(send_email, retries=2), "a@example.com")


def test_a_collector_given_a_backend_checks_the_tasks_it_already_has() -> None:
    with pytest.raises(TypeError, match="only takes afterward tasks"):
        BackgroundTasks([lambda: None], backend=ListBackend())  # type: ignore[list-item]
    with pytest.raises(TypeError, match="cannot run async functions"):
        BackgroundTasks([BackgroundTask(notify, 1)], backend=SyncOnly())


async def test_running_a_collector_with_a_backend_enqueues_instead_of_running() -> None:
    backend = ListBackend()
    tasks = BackgroundTasks(backend=backend)
    tasks.add_task(send_email, "a@example.com")
    tasks.add_task(notify, 7)
    await tasks()
    await tasks()  # each task is handed over once
    assert backend.batches == [
        [("test_backend.send_email", ("a@example.com",)), ("test_backend.notify", (7,))]
    ]


async def test_a_collector_logs_the_tasks_it_could_not_enqueue(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = ListBackend()
    backend.fail = ConnectionError("broker down")
    tasks = BackgroundTasks(backend=backend)
    tasks.add_task(send_email, "a@example.com")
    await tasks()  # never raises to the server
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "ConnectionError: broker down" in record.getMessage()
    assert "test_backend.send_email" in record.getMessage()


async def test_entries_a_backend_cannot_send_are_logged_not_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = ListBackend()
    tasks = BackgroundTasks(backend=backend)
    tasks.add_task(send_email, "a@example.com")
    tasks.tasks.append(BackgroundTasks())  # appended by hand: not an afterward task
    await tasks()
    assert len(backend.batches) == 1
    assert "were not added with add_task" in caplog.text


async def test_before_response_enqueues_before_the_response_starts() -> None:
    backend = ListBackend()
    app = BackgroundTasksMiddleware(
        app_adding((send_email, "a@example.com"), (notify, 3)), backend=backend
    )
    sent: list[Message] = []
    backend.seen = sent

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope: Scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    await app(scope, receive, send)
    assert backend.sent_before == [0]  # nothing had reached the client yet
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200
    assert backend.batches == [
        [("test_backend.send_email", ("a@example.com",)), ("test_backend.notify", (3,))]
    ]


@pytest.mark.parametrize("failure", ["raises", "hangs"])
async def test_when_enqueueing_fails_the_client_gets_a_503_and_the_log_names_the_tasks(
    failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend = ListBackend()
    if failure == "raises":
        backend.fail = ConnectionError("broker down")
    else:
        backend.hang = True
    app = BackgroundTasksMiddleware(
        app_adding((send_email, "a@example.com"), (notify, 3)), backend=backend, handoff_timeout=0.2
    )
    async with client(app) as http:
        with anyio.fail_after(5):
            response = await http.post("/")
    assert response.status_code == 503
    assert "could not be queued" in response.text
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "test_backend.send_email, test_backend.notify" in errors[0]
    assert ("more than 0.2 s" if failure == "hangs" else "ConnectionError") in errors[0]


async def test_after_response_enqueues_once_the_response_is_sent() -> None:
    backend = ListBackend(handoff="after_response")
    app = BackgroundTasksMiddleware(app_adding((send_email, "a@example.com")), backend=backend)
    async with running(app) as _, client(app) as http:
        response = await http.post("/")
        assert response.status_code == 200
        supervisor = app.supervisor
        assert supervisor is not None
        with anyio.fail_after(5):
            await supervisor.wait_idle()
    assert backend.batches == [[("test_backend.send_email", ("a@example.com",))]]


async def test_after_response_failures_are_logged_by_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = ListBackend(handoff="after_response")
    backend.fail = ConnectionError("broker down")
    app = BackgroundTasksMiddleware(app_adding((send_email, "a@example.com")), backend=backend)
    async with client(app) as http:  # no lifespan: the hand-off runs inline, after the response
        response = await http.post("/")
    assert response.status_code == 200
    assert "Could not queue 1 background task(s)" in caplog.text
    assert "test_backend.send_email" in caplog.text


async def test_an_error_status_enqueues_only_the_always_tasks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "afterward")
    backend = ListBackend()
    always = afterward.task(send_email, always=True)
    app = BackgroundTasksMiddleware(
        app_adding((send_email, "a@example.com"), (always, "audit@example.com"), status=404),
        backend=backend,
    )
    async with client(app) as http:
        response = await http.post("/")
    assert response.status_code == 404
    assert backend.batches == [[("test_backend.send_email", ("audit@example.com",))]]
    assert "response status was 404" in caplog.text


async def test_tasks_added_after_the_response_started_are_enqueued_when_the_app_returns() -> None:
    backend = ListBackend()
    app = BackgroundTasksMiddleware(
        app_adding((send_email, "a@example.com"), streaming=True), backend=backend
    )
    async with client(app) as http:
        response = await http.post("/")
    assert response.text == "first second"
    assert backend.batches == [
        [("test_backend.send_email", ("a@example.com",))],
        [("test_backend.send_email", ("late@example.com",))],
    ]


async def test_tasks_of_a_request_that_raised_are_not_enqueued(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = ListBackend()

    async def endpoint(request: Request) -> Response:
        afterward.current_tasks().add_task(send_email, "a@example.com")
        raise RuntimeError("boom")

    app = BackgroundTasksMiddleware(
        Starlette(routes=[Route("/", endpoint, methods=["POST"])]), backend=backend
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t"
    ) as http:
        response = await http.post("/")
    assert response.status_code == 500
    assert backend.batches == []
    assert "the app raised RuntimeError: test_backend.send_email" in caplog.text


async def test_run_when_always_enqueues_the_tasks_of_a_request_that_raised() -> None:
    backend = ListBackend()

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        afterward.current_tasks().add_task(send_email, "a@example.com")
        raise RuntimeError("boom")

    app = BackgroundTasksMiddleware(endpoint, backend=backend, run_when="always")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t"
    ) as http:
        await http.post("/")
    assert backend.batches == [[("test_backend.send_email", ("a@example.com",))]]


async def test_websocket_tasks_are_enqueued_when_the_session_ends() -> None:
    backend = ListBackend()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        afterward.current_tasks().add_task(send_email, "ws@example.com")
        await websocket.close()

    app = BackgroundTasksMiddleware(
        Starlette(routes=[WebSocketRoute("/ws", endpoint)]), backend=backend
    )
    messages: Iterator[Message] = iter(
        [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]
    )
    sent: list[Message] = []

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        sent.append(message)

    await app(
        {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}, receive, send
    )
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
    assert backend.batches == [[("test_backend.send_email", ("ws@example.com",))]]


async def test_handles_stay_pending_once_queued_and_are_abandoned_if_not() -> None:
    backend = ListBackend()
    tasks = BackgroundTasks(backend=backend)
    queued = tasks.add_task(send_email, "a@example.com")
    await tasks()
    assert queued.status == "pending"  # what becomes of it happens on the engine's side
    backend.fail = ConnectionError("broker down")
    lost = tasks.add_task(send_email, "b@example.com")
    await tasks()
    assert lost.status == "abandoned"


async def test_a_client_that_leaves_mid_response_gets_its_tasks_logged_not_queued(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "afterward")
    backend = ListBackend(handoff="after_response")
    app = BackgroundTasksMiddleware(
        app_adding((send_email, "a@example.com"), streaming=True), backend=backend
    )

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError  # never reached

    async def send(message: Message) -> None:
        if message.get("body") == b"second":
            raise OSError("the client went away")

    with pytest.raises(OSError, match="went away"):
        await app({"type": "http", "method": "POST", "path": "/", "headers": []}, receive, send)
    assert backend.batches == []
    assert "the app raised OSError" in caplog.text


async def test_tasks_added_after_a_503_are_logged_not_queued(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = ListBackend()
    backend.fail = ConnectionError("broker down")
    app = BackgroundTasksMiddleware(
        app_adding((send_email, "a@example.com"), streaming=True), backend=backend
    )
    async with client(app) as http:
        response = await http.post("/")
    assert response.status_code == 503  # the app's streamed body is dropped
    assert "could not be queued" in response.text
    assert "the response was replaced by a 503: test_backend.send_email" in caplog.text


async def test_an_error_status_queues_nothing_and_a_request_without_tasks_nothing_either(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "afterward")
    backend = ListBackend()
    failing = BackgroundTasksMiddleware(
        app_adding((send_email, "a@example.com"), status=500), backend=backend
    )
    empty = BackgroundTasksMiddleware(app_adding(), backend=backend)
    async with client(failing) as http:
        assert (await http.post("/")).status_code == 500
    async with client(empty) as http:
        assert (await http.post("/")).status_code == 200
    assert backend.batches == []
    assert "response status was 500 (run_when='success' needs < 400)" in caplog.text


@pytest.mark.parametrize("handoff", ["before_response", "after_response"])
@pytest.mark.parametrize("run_when", ["completed", "always"])
async def test_other_run_policies_queue_after_an_error_status(run_when: str, handoff: str) -> None:
    backend = ListBackend(handoff=handoff)
    app = BackgroundTasksMiddleware(
        app_adding((send_email, "a@example.com"), status=500),
        backend=backend,
        run_when=run_when,  # type: ignore[arg-type]
    )
    async with client(app) as http:
        assert (await http.post("/")).status_code == 500
    assert backend.batches == [[("test_backend.send_email", ("a@example.com",))]]


async def test_an_unfinished_response_queues_nothing_after_the_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "afterward")
    backend = ListBackend(handoff="after_response")

    async def unfinished(scope: Scope, receive: Receive, send: Send) -> None:
        afterward.current_tasks().add_task(send_email, "a@example.com")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    app = BackgroundTasksMiddleware(unfinished, backend=backend)
    await app({"type": "http", "method": "GET", "path": "/", "headers": []}, _no_receive, send)
    assert backend.batches == []
    assert "the response was not completed" in caplog.text


async def test_a_denied_websocket_queues_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "afterward")
    backend = ListBackend()

    async def deny(scope: Scope, receive: Receive, send: Send) -> None:
        afterward.current_tasks().add_task(send_email, "ws@example.com")
        await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"no"})

    async def send(message: Message) -> None:
        pass

    app = BackgroundTasksMiddleware(deny, backend=backend)
    await app({"type": "websocket", "path": "/ws", "headers": []}, _no_receive, send)
    assert backend.batches == []
    assert "response status was 403" in caplog.text


async def _no_receive() -> Message:
    await anyio.sleep_forever()
    raise AssertionError  # never reached


async def test_fastapi_s_drop_in_under_the_middleware_sends_to_the_backend() -> None:
    backend = ListBackend()
    api = FastAPI()

    @api.post("/sign-up")
    async def sign_up(background_tasks: FastAPITasks) -> dict[str, str]:
        background_tasks.add_task(send_email, "a@example.com")
        return {"ok": "yes"}

    app = BackgroundTasksMiddleware(api, backend=backend)
    async with client(app) as http:
        assert (await http.post("/sign-up")).json() == {"ok": "yes"}
    assert backend.batches == [[("test_backend.send_email", ("a@example.com",))]]


async def test_tasks_queued_before_the_app_failed_mid_body_stay_queued(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = ListBackend()

    async def fails_mid_body(scope: Scope, receive: Receive, send: Send) -> None:
        afterward.current_tasks().add_task(send_email, "a@example.com")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("boom")

    async def send(message: Message) -> None:
        pass

    app = BackgroundTasksMiddleware(fails_mid_body, backend=backend)
    with pytest.raises(RuntimeError, match="boom"):
        await app({"type": "http", "method": "GET", "path": "/", "headers": []}, _no_receive, send)
    assert backend.batches == [[("test_backend.send_email", ("a@example.com",))]]
    assert "Not running" not in caplog.text
