"""Events and log fields, through the public API as a user sets them up once for an app.

`afterward.on_event` for metrics or an error tracker; the `extra` fields of the `afterward`
logger's records for structured logging. Each on tasks run inline (a response's `background`)
and detached (`BackgroundTasksMiddleware`), sync and async.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import afterward
from afterward import BackgroundTasks, BackgroundTasksMiddleware, TaskEvent, current_tasks
from test_middleware import client, running

pytestmark = pytest.mark.anyio

Queue = Callable[[BackgroundTasks], object]


async def serve_one(mode: str, queue: Queue) -> None:
    """Send one request whose endpoint calls `queue`; return once its tasks have all ended."""
    if mode == "inline":

        async def inline(request: Request) -> Response:
            tasks = BackgroundTasks()
            queue(tasks)
            return PlainTextResponse("ok", background=tasks)

        app = Starlette(routes=[Route("/", inline)])
        async with client(app) as http:
            assert (await http.get("/")).status_code == 200
        return

    async def detached(request: Request) -> Response:
        queue(current_tasks())
        return PlainTextResponse("ok")

    middleware = BackgroundTasksMiddleware(Starlette(routes=[Route("/", detached)]))
    async with (
        running(middleware),
        client(middleware) as http,
    ):
        assert (await http.get("/")).status_code == 200
        assert middleware.supervisor is not None
        with anyio.fail_after(5):
            await middleware.supervisor.wait_idle()


class Recorder:
    """An event callback as a user writes one: it keeps what it is given, and where."""

    def __init__(self) -> None:
        self.events: list[TaskEvent] = []
        self.threads: list[int] = []

    def __call__(self, event: TaskEvent) -> None:
        self.events.append(event)
        self.threads.append(threading.get_ident())

    def outline(self) -> list[tuple[str, int, bool, str | None]]:
        """Kind, attempt, whether a duration is given, and the exception's type name."""
        return [
            (
                e.kind,
                e.attempt,
                e.duration is not None,
                None if e.exception is None else type(e.exception).__name__,
            )
            for e in self.events
        ]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    stop = afterward.on_event(recorder)
    yield recorder
    stop()


def failing(failures: int) -> Callable[[], None]:
    """A sync function that raises `failures` times, then returns."""
    calls: list[None] = []

    def send_invoice() -> None:
        calls.append(None)
        if len(calls) <= failures:
            raise ConnectionError(f"attempt {len(calls)}: the mail server is down")

    return send_invoice


def failing_async(failures: int) -> Callable[[], Any]:
    calls: list[None] = []

    async def send_invoice() -> None:
        calls.append(None)
        await anyio.lowlevel.checkpoint()
        if len(calls) <= failures:
            raise ConnectionError(f"attempt {len(calls)}: the mail server is down")

    return send_invoice


MODES = pytest.mark.parametrize("mode", ["inline", "detached"])
KINDS = pytest.mark.parametrize("make", [failing, failing_async], ids=["sync", "async"])
Make = Callable[[int], Callable[[], Any]]


@MODES
@KINDS
async def test_a_success_is_queued_started_succeeded(
    mode: str, make: Make, recorder: Recorder
) -> None:
    handles: list[afterward.BackgroundTask] = []
    func = afterward.task(make(0), name="billing.send_invoice")
    await serve_one(mode, lambda tasks: handles.append(tasks.add_task(func)))

    assert recorder.outline() == [
        ("queued", 0, False, None),
        ("started", 1, False, None),
        ("succeeded", 1, True, None),
    ]
    [handle] = handles
    assert {(e.name, e.id) for e in recorder.events} == {("billing.send_invoice", handle.id)}
    assert all(e.task is handle for e in recorder.events)
    succeeded = recorder.events[-1]
    assert succeeded.duration is not None
    assert 0 <= succeeded.duration < 5


@MODES
@KINDS
async def test_a_retry_then_success_is_reported_attempt_by_attempt(
    mode: str, make: Make, recorder: Recorder
) -> None:
    func = afterward.task(make(2), retries=3)
    await serve_one(mode, lambda tasks: tasks.add_task(func))

    assert recorder.outline() == [
        ("queued", 0, False, None),
        ("started", 1, False, None),
        ("retrying", 1, True, "ConnectionError"),
        ("started", 2, False, None),
        ("retrying", 2, True, "ConnectionError"),
        ("started", 3, False, None),
        ("succeeded", 3, True, None),
    ]
    assert str(recorder.events[4].exception) == "attempt 2: the mail server is down"


@MODES
@KINDS
async def test_a_final_failure_is_retrying_then_failed(
    mode: str, make: Make, recorder: Recorder
) -> None:
    handles: list[afterward.BackgroundTask] = []
    func = afterward.task(make(5), retries=1)
    await serve_one(mode, lambda tasks: handles.append(tasks.add_task(func)))

    assert recorder.outline() == [
        ("queued", 0, False, None),
        ("started", 1, False, None),
        ("retrying", 1, True, "ConnectionError"),
        ("started", 2, False, None),
        ("failed", 2, True, "ConnectionError"),
    ]
    [handle] = handles
    assert recorder.events[-1].exception is handle.exception


@MODES
async def test_tasks_skipped_after_a_failure_are_abandoned(mode: str, recorder: Recorder) -> None:
    def queue(tasks: BackgroundTasks) -> None:
        tasks.stop_on_error = True
        tasks.add_task(failing(1))
        tasks.add_task(failing(0))

    await serve_one(mode, queue)

    assert [(e.kind, e.attempt) for e in recorder.events] == [
        ("queued", 0),
        ("queued", 0),
        ("started", 1),
        ("failed", 1),
        ("abandoned", 0),
    ]


async def test_events_stop_when_the_callback_is_removed() -> None:
    recorder = Recorder()
    stop = afterward.on_event(recorder)
    stop()
    await serve_one("inline", lambda tasks: tasks.add_task(failing(0)))
    assert recorder.events == []


@MODES
async def test_a_broken_callback_is_logged_and_the_tasks_and_other_callbacks_go_on(
    mode: str, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: TaskEvent) -> None:
        raise RuntimeError("the metrics server is down")

    stop = afterward.on_event(broken)
    handles: list[afterward.BackgroundTask] = []
    try:
        await serve_one(mode, lambda tasks: handles.append(tasks.add_task(failing(0))))
    finally:
        stop()

    [handle] = handles
    assert handle.status == "succeeded"
    assert [e.kind for e in recorder.events] == ["queued", "started", "succeeded"]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(messages) == 3
    assert all("event callback" in m for m in messages)


# --- log records: the task's fields in `extra`, for structured logging ------------------------

FIELDS = (
    "afterward_task",
    "afterward_task_id",
    "afterward_attempt",
    "afterward_outcome",
    "afterward_duration",
)


class JSONLines(logging.Handler):
    """A structured-logging handler as users write them: one JSON object per record."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = {name: getattr(record, name) for name in FIELDS if hasattr(record, name)}
        self.lines.append(json.dumps({"level": record.levelname, **fields}))


@pytest.fixture
def json_lines() -> Iterator[JSONLines]:
    handler = JSONLines()
    logger = logging.getLogger("afterward")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@MODES
@KINDS
async def test_each_failed_attempt_s_log_record_carries_the_task_s_fields(
    mode: str, make: Make, json_lines: JSONLines
) -> None:
    handles: list[afterward.BackgroundTask] = []
    func = afterward.task(make(5), retries=1, name="billing.send_invoice")
    await serve_one(mode, lambda tasks: handles.append(tasks.add_task(func)))

    [handle] = handles
    records = [json.loads(line) for line in json_lines.lines]
    durations = [record.pop("afterward_duration") for record in records]
    assert records == [
        {
            "level": "WARNING",
            "afterward_task": "billing.send_invoice",
            "afterward_task_id": handle.id,
            "afterward_attempt": 1,
            "afterward_outcome": "retrying",
        },
        {
            "level": "ERROR",
            "afterward_task": "billing.send_invoice",
            "afterward_task_id": handle.id,
            "afterward_attempt": 2,
            "afterward_outcome": "failed",
        },
    ]
    assert all(isinstance(d, float) and 0 <= d < 5 for d in durations)


async def test_the_fields_are_on_the_record_for_a_formatter_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    formatter = logging.Formatter(
        "%(levelname)s %(afterward_task)s#%(afterward_attempt)s %(afterward_outcome)s"
    )
    await serve_one("inline", lambda tasks: tasks.add_task(failing(1)))

    [record] = [r for r in caplog.records if r.name == "afterward"]
    assert formatter.format(record).splitlines()[0] == (
        f"ERROR {__name__}.failing.<locals>.send_invoice#1 failed"
    )


@MODES
async def test_queued_comes_from_the_endpoint_s_thread_the_rest_from_the_loop_s(
    mode: str, recorder: Recorder
) -> None:
    loop_thread = threading.get_ident()
    endpoint_threads: list[int] = []
    attempt_threads: list[int] = []

    def send_email() -> None:
        attempt_threads.append(threading.get_ident())

    def sync_endpoint(request: Request) -> Response:  # Starlette runs it in a worker thread
        endpoint_threads.append(threading.get_ident())
        tasks = current_tasks() if mode == "detached" else BackgroundTasks()
        tasks.add_task(send_email)
        return PlainTextResponse("ok", background=None if mode == "detached" else tasks)

    app = Starlette(routes=[Route("/", sync_endpoint)])
    if mode == "inline":
        async with client(app) as http:
            await http.get("/")
    else:
        middleware = BackgroundTasksMiddleware(app)
        async with (
            running(middleware),
            client(middleware) as http,
        ):
            await http.get("/")
            assert middleware.supervisor is not None
            with anyio.fail_after(5):
                await middleware.supervisor.wait_idle()

    [endpoint_thread] = endpoint_threads
    [attempt_thread] = attempt_threads
    assert loop_thread not in (endpoint_thread, attempt_thread)  # (they may share one thread)
    assert [e.kind for e in recorder.events] == ["queued", "started", "succeeded"]
    assert recorder.threads == [endpoint_thread, loop_thread, loop_thread]
