"""afterward.testing.record_tasks: every way a collector runs records instead, and run() replays."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextvars import ContextVar
from unittest.mock import ANY

import anyio
import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.background import BackgroundTask as StarletteTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import afterward
import afterward.fastapi
from afterward import BackgroundTasks, BackgroundTasksMiddleware, current_tasks, inject, task
from afterward.testing import RecordingBackend, lifespan, record_tasks, wait_idle

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

done: list[str] = []
user: ContextVar[str] = ContextVar("user", default="nobody")


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    done.clear()
    yield
    done.clear()


def send_welcome(email: str, *, language: str = "en") -> None:
    done.append(f"welcome {email} {language} as {user.get()}")


async def log_signup(email: str) -> None:
    await anyio.lowlevel.checkpoint()
    done.append(f"logged {email}")


@task(retries=2, backoff=0.0)
def send_receipt(email: str) -> None:
    done.append(f"receipt {email}")


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.post("/users/{email}")
    async def sign_up(email: str, tasks: afterward.fastapi.BackgroundTasks) -> dict[str, str]:
        user.set("ada")
        tasks.add_task(send_welcome, email, language="fr")
        tasks.add_task(log_signup, email)
        tasks.add_task(send_receipt, email)
        return {"status": "ok"}

    return app


async def register(email: str, tasks: BackgroundTasks) -> dict[str, str]:
    user.set("grace")
    tasks.add_task(send_welcome, email)
    tasks.add_task(log_signup, email)
    return {"status": "ok"}


def inject_app() -> Starlette:
    return Starlette(routes=[Route("/users/{email}", inject(register), methods=["POST"])])


async def detached_endpoint(request: Request) -> Response:
    email = request.path_params["email"]
    user.set("linus")
    current_tasks().add_task(send_welcome, email)
    current_tasks().add_task(log_signup, email)
    return PlainTextResponse("ok")


def middleware_app() -> Starlette:
    return Starlette(
        routes=[Route("/users/{email}", detached_endpoint, methods=["POST"])],
        middleware=[Middleware(BackgroundTasksMiddleware)],
    )


def client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")  # type: ignore[arg-type]


# -- each way in records ------------------------------------------------------------------------


def test_the_fastapi_drop_in_records_and_run_sync_runs_them_later() -> None:
    with record_tasks() as recorded, TestClient(fastapi_app()) as http:
        assert http.post("/users/ada@example.com").status_code == 200
        assert done == []
        welcome = recorded.assert_called(send_welcome, "ada@example.com", language="fr")
        recorded.assert_called(log_signup, "ada@example.com")
        receipt = recorded.assert_called_once(send_receipt, "ada@example.com")
    assert welcome.policy is None
    assert receipt.policy is not None
    assert receipt.policy.retries == 2
    assert receipt.func is send_receipt.func
    assert receipt.name == send_receipt.name
    assert recorded.names == [
        f"{__name__}.send_welcome",
        f"{__name__}.log_signup",
        send_receipt.name,
    ]
    recorded.run_sync()
    assert done == [
        "welcome ada@example.com fr as ada",  # the context captured by add_task
        "logged ada@example.com",
        "receipt ada@example.com",
    ]
    assert recorded.pending == []
    assert all(call.ran for call in recorded)


def test_a_recorded_entry_is_the_handle_add_task_returned() -> None:
    tasks = BackgroundTasks()
    handle = tasks.add_task(send_welcome, "a@b.c")
    with record_tasks() as recorded:
        anyio.run(tasks)
    [call] = recorded.calls
    assert call.entry is handle
    assert handle.status == "pending"
    recorded.run_sync()
    assert (handle.status, done) == ("succeeded", ["welcome a@b.c en as nobody"])


@pytest.mark.anyio
async def test_inject_endpoints_record_and_run_awaits_them() -> None:
    with record_tasks() as recorded:
        async with client(inject_app()) as http:
            await http.post("/users/grace@example.com")
    assert done == []
    assert [call.call_repr() for call in recorded] == [
        f"{__name__}.send_welcome('grace@example.com')",
        f"{__name__}.log_signup('grace@example.com')",
    ]
    await recorded.run()
    assert done == ["welcome grace@example.com en as grace", "logged grace@example.com"]


def test_the_middleware_records_at_the_detached_hand_off_with_testclient() -> None:
    app = middleware_app()
    with record_tasks() as recorded, TestClient(app) as http:
        http.post("/users/linus@example.com")
        middleware = app.middleware_stack.app  # type: ignore[union-attr]
        assert isinstance(middleware, BackgroundTasksMiddleware)
        assert middleware.supervisor is not None
        assert middleware.supervisor.running
        assert middleware.supervisor.counts() == (0, 0)  # nothing was handed to it
        assert recorded.names == [f"{__name__}.send_welcome", f"{__name__}.log_signup"]
        recorded.run_sync(http)  # on the app's event loop
    assert done == ["welcome linus@example.com en as linus", "logged linus@example.com"]


@pytest.mark.anyio
async def test_the_middleware_records_under_a_real_lifespan_with_httpx() -> None:
    app = middleware_app()
    with record_tasks() as recorded:
        async with lifespan(app), client(app) as http:
            await http.post("/users/linus@example.com")
            await wait_idle(app)
            assert done == []
            recorded.assert_called(send_welcome, ANY)
            await recorded.run()
    assert done == ["welcome linus@example.com en as linus", "logged linus@example.com"]


@pytest.mark.anyio
async def test_the_middleware_without_a_lifespan_records_its_inline_run() -> None:
    with record_tasks() as recorded:
        async with client(middleware_app()) as http:
            await http.post("/users/linus@example.com")
    assert len(recorded) == 2
    assert done == []


@pytest.mark.anyio
async def test_attach_records_the_responses_own_background_first() -> None:
    async def endpoint(request: Request) -> Response:
        tasks = BackgroundTasks()
        tasks.add_task(send_welcome, "x@y.z")
        own = PlainTextResponse("ok", background=StarletteTask(send_welcome, "own@y.z"))
        return afterward.attach(own, tasks)

    with record_tasks() as recorded:
        async with client(Starlette(routes=[Route("/", endpoint)])) as http:
            await http.get("/")
    assert [call.args for call in recorded] == [("own@y.z",), ("x@y.z",)]
    assert isinstance(recorded.calls[0].entry, StarletteTask)
    await recorded.run()
    assert done == ["welcome own@y.z en as nobody", "welcome x@y.z en as nobody"]


# -- the scope of the switch --------------------------------------------------------------------


@pytest.mark.anyio
async def test_collectors_run_again_once_the_block_has_ended() -> None:
    with record_tasks() as recorded:
        tasks = BackgroundTasks()
        tasks.add_task(send_welcome, "in@block")
        await tasks()
    after = BackgroundTasks()
    after.add_task(send_welcome, "after@block")
    await after()
    assert done == ["welcome after@block en as nobody"]
    assert [call.args for call in recorded] == [("in@block",)]


@pytest.mark.anyio
async def test_nested_blocks_record_in_the_innermost_then_the_outer_again() -> None:
    async def queue(email: str) -> None:
        tasks = BackgroundTasks()
        tasks.add_task(send_welcome, email)
        await tasks()

    with record_tasks() as outer:
        await queue("first")
        with record_tasks() as inner:
            await queue("second")
        await queue("third")
    assert [call.args for call in outer] == [("first",), ("third",)]
    assert [call.args for call in inner] == [("second",)]


def test_blocks_may_end_out_of_order() -> None:
    first = record_tasks()
    second = record_tasks()
    one = first.__enter__()
    two = second.__enter__()
    first.__exit__(None, None, None)
    tasks = BackgroundTasks()
    tasks.add_task(send_welcome, "x")
    anyio.run(tasks)
    second.__exit__(None, None, None)
    assert (len(one), len(two)) == (0, 1)
    anyio.run(tasks)
    assert done == []  # taken by the recorder, so not run by the collector again


# -- running what was recorded ------------------------------------------------------------------


@pytest.mark.anyio
async def test_run_isolates_failures_and_keeps_each_collectors_options(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    def fail() -> None:
        raise ConnectionError("down")

    def report(entry: object, exc: Exception) -> None:
        seen.append(type(exc).__name__)

    with record_tasks() as recorded:
        first = BackgroundTasks(on_error=report)
        first.add_task(fail)
        first.add_task(send_welcome, "after-failure")
        await first()
        second = BackgroundTasks(stop_on_error=True)
        second.add_task(fail)
        second.add_task(send_welcome, "skipped")
        await second()
        third = BackgroundTasks()
        third.add_task(send_welcome, "third")
        await third()
    await recorded.run()
    assert done == ["welcome after-failure en as nobody", "welcome third en as nobody"]
    assert seen == ["ConnectionError"]
    failed = [getattr(r, "afterward_task", None) for r in caplog.records if r.exc_info]
    assert failed == [f"{__name__}.{fail.__qualname__}"] * 2
    [skipped] = [r for r in caplog.records if "stop_on_error is set" in r.getMessage()]
    assert skipped.levelno == logging.ERROR
    assert skipped.getMessage().endswith(f"{__name__}.send_welcome.")
    assert recorded.pending == []
    await recorded.run()  # nothing left: runs nothing again
    assert len(done) == 2


@pytest.mark.anyio
async def test_tasks_queued_by_running_tasks_are_recorded_and_run_too() -> None:
    def chain() -> None:
        current_tasks().add_task(send_welcome, "queued-by-a-task")

    with record_tasks() as recorded:
        async with client(inject_app_with(chain)) as http:
            await http.get("/")
        await recorded.run()
    assert done == ["welcome queued-by-a-task en as nobody"]
    assert recorded.names == [f"{__name__}.{chain.__qualname__}", f"{__name__}.send_welcome"]


def inject_app_with(func: object) -> Starlette:
    async def endpoint(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(func)  # type: ignore[arg-type]
        return {}

    return Starlette(routes=[Route("/", inject(endpoint))])


@pytest.mark.anyio
async def test_run_sync_refuses_to_block_a_running_loop() -> None:
    recorded = RecordingBackend()
    with pytest.raises(RuntimeError, match=r"inside a running event loop.*await"):
        recorded.run_sync()


def test_run_sync_on_trio_and_through_a_portal() -> None:
    with record_tasks() as recorded:
        tasks = BackgroundTasks()
        tasks.add_task(log_signup, "trio")
        anyio.run(tasks)
    recorded.run_sync(backend="trio")
    assert done == ["logged trio"]
    tasks.add_task(log_signup, "portal")
    with record_tasks() as recorded:
        anyio.run(tasks)
    with anyio.from_thread.start_blocking_portal() as portal:
        recorded.run_sync(portal)
    assert done == ["logged trio", "logged portal"]


def test_run_sync_with_a_testclient_outside_its_block_says_to_use_with() -> None:
    recorded = RecordingBackend()
    with pytest.raises(RuntimeError, match=r"inside its `with` block"):
        recorded.run_sync(TestClient(fastapi_app()))
    with pytest.raises(TypeError, match=r"TestClient .* or an AnyIO BlockingPortal, got 42"):
        recorded.run_sync(42)


@pytest.mark.anyio
async def test_a_backend_enqueue_records_like_a_collector() -> None:
    recorded = RecordingBackend()
    recorded.validate(object())
    tasks = BackgroundTasks()
    entry = tasks.add_task(send_welcome, "enqueued")
    await recorded.enqueue([entry])
    assert recorded.calls[0].entry is entry
    await recorded.run()
    assert done == ["welcome enqueued en as nobody"]


# -- handles, events and policies ---------------------------------------------------------------


@pytest.mark.anyio
async def test_recording_abandons_nothing_and_run_applies_the_policy() -> None:
    attempts: list[int] = []

    @task(retries=1, backoff=0.0)
    async def flaky() -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            raise ConnectionError("first attempt fails")

    kinds: list[str] = []
    stop = afterward.on_event(lambda event: kinds.append(event.kind))
    try:
        with record_tasks() as recorded:
            tasks = BackgroundTasks()
            handle = tasks.add_task(flaky)
            await tasks()
        assert kinds == ["queued"]  # recorded: neither run nor abandoned
        assert (handle.status, recorded.pending[0].entry) == ("pending", handle)
        await recorded.run()
    finally:
        stop()
    assert attempts == [1, 2]
    assert kinds == ["queued", "started", "retrying", "started", "succeeded"]
    assert (handle.status, handle.attempts) == ("succeeded", 2)


@pytest.mark.anyio
async def test_run_keeps_the_collectors_concurrency() -> None:
    both_started = anyio.Event()
    started: list[str] = []

    async def meet(name: str) -> None:
        started.append(name)
        if len(started) == 2:
            both_started.set()
        with anyio.fail_after(5):
            await both_started.wait()  # only returns if the two run at once

    with record_tasks() as recorded:
        tasks = BackgroundTasks(concurrency=2)
        tasks.add_task(meet, "a")
        tasks.add_task(meet, "b")
        await tasks()
    assert started == []
    await recorded.run()
    assert sorted(started) == ["a", "b"]


@pytest.mark.anyio
async def test_a_lone_background_task_of_a_response_is_recorded() -> None:
    async def endpoint(request: Request) -> Response:
        lone = afterward.BackgroundTask(send_welcome, "lone@y.z")
        return PlainTextResponse("ok", background=lone)

    with record_tasks() as recorded:
        async with client(Starlette(routes=[Route("/", endpoint)])) as http:
            await http.get("/")
    recorded.assert_called_once(send_welcome, "lone@y.z")
    assert done == []
    await recorded.run()
    assert done == ["welcome lone@y.z en as nobody"]


@pytest.mark.anyio
async def test_a_starlette_collector_inside_an_afterward_one_is_recorded_task_by_task() -> None:
    from starlette.background import BackgroundTasks as StarletteTasks

    inner = StarletteTasks()
    inner.add_task(send_welcome, "inner@y.z")
    with record_tasks() as recorded:
        await BackgroundTasks([inner])()
    assert [call.args for call in recorded] == [("inner@y.z",)]
    await recorded.run()
    assert done == ["welcome inner@y.z en as nobody"]


def test_the_switch_is_off_outside_a_block_and_stopping_twice_is_harmless() -> None:
    from afterward import _recording

    assert not _recording.intercept(BackgroundTasks())
    assert not _recording.intercept_task(afterward.BackgroundTask(send_welcome, "x"))
    recorder = RecordingBackend()
    _recording.start(recorder)
    _recording.stop(recorder)
    _recording.stop(recorder)
    assert _recording.recorder is None


@pytest.mark.anyio
async def test_the_middleware_records_the_tasks_of_a_failed_request_it_runs_always() -> None:
    async def endpoint(request: Request) -> Response:
        current_tasks().add_task(send_welcome, "failed@y.z")
        raise RuntimeError("the endpoint failed")

    app = Starlette(
        routes=[Route("/", endpoint)],
        middleware=[Middleware(BackgroundTasksMiddleware, run_when="always")],
    )
    with record_tasks() as recorded:
        async with lifespan(app), client(app) as http:
            with pytest.raises(RuntimeError, match="the endpoint failed"):
                await http.get("/")
            await wait_idle(app)
    recorded.assert_called_once(send_welcome, "failed@y.z")
    assert done == []


def test_a_recorder_is_a_backend_for_one_app_only() -> None:
    def notify(who: str) -> None:
        done.append(who)

    async def endpoint(request: Request) -> Response:
        current_tasks().add_task(notify, request.path_params["who"])
        return PlainTextResponse("ok")

    recorder = RecordingBackend()
    assert isinstance(recorder, afterward.Backend)
    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/{who}", endpoint)]), backend=recorder)
    with TestClient(app) as client:
        assert client.get("/ada").text == "ok"
        # Recorded when the response started: there is nothing to wait for.
        recorder.assert_called_once(notify, "ada")
        assert done == []
        recorder.run_sync(client)
    assert done == ["ada"]


@pytest.mark.anyio
async def test_a_recorder_is_a_backend_for_one_collector() -> None:
    def notify(who: str) -> None:
        done.append(who)

    recorder = RecordingBackend()
    tasks = BackgroundTasks(backend=recorder)
    tasks.add_task(notify, "grace")
    await tasks()
    recorder.assert_called_once(notify, "grace")
    assert done == []
    await recorder.run()
    assert done == ["grace"]
