"""Per-task spans: the tracing tools see each afterward task as they see a Starlette/FastAPI task.

Each test runs the same tasks twice in one app, side by side: queued on the framework's own
collector, and on afterward's. The spans come from the real instrumentations into the
OpenTelemetry SDK's in-memory exporter, and are compared by name, parent and status; each task
records which span was current while it ran.
"""

from __future__ import annotations

import contextvars
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

import anyio
import anyio.lowlevel
import fastapi
import httpx
import logfire
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.starlette import StarletteInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from starlette.applications import Starlette
from starlette.background import BackgroundTask as StarletteTask
from starlette.background import BackgroundTasks as StarletteTasks
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

import afterward
import afterward.fastapi
from afterward import _tracing

pytestmark = pytest.mark.anyio

Seen = dict[str, int]
"""Task tag -> id of the span that was current while the task ran (0: none recording)."""


def remember(seen: Seen, tag: str) -> None:
    span = trace.get_current_span()
    seen[tag] = span.get_span_context().span_id if span.is_recording() else 0


def send_email(seen: Seen, tag: str) -> None:
    remember(seen, tag)


def write_log(seen: Seen, tag: str) -> None:
    remember(seen, tag)


async def notify(seen: Seen, tag: str) -> None:
    remember(seen, tag)


def fail(seen: Seen, tag: str) -> None:
    remember(seen, tag)
    raise RuntimeError("the mail server is down")


class Audit:
    """A callable instance: no `__name__`, so the hooks name it after its class."""

    def __call__(self, seen: Seen, tag: str) -> None:
        remember(seen, tag)


def queue(tasks: StarletteTasks, seen: Seen, prefix: str) -> None:
    """Queue the same five tasks: sync, sync (a batch for afterward), async, a callable instance,
    and a failing one last (a failure stops Starlette's and FastAPI's collectors)."""
    tasks.add_task(send_email, seen, f"{prefix}1")
    tasks.add_task(write_log, seen, f"{prefix}2")
    tasks.add_task(notify, seen, f"{prefix}3")
    tasks.add_task(Audit(), seen, f"{prefix}4")
    tasks.add_task(fail, seen, f"{prefix}5")


@dataclass(frozen=True)
class TaskSpan:
    name: str
    parent: str  # "request" for the request's root span, else the parent span's name
    status: StatusCode
    function: str  # FastAPI's code.function.name attribute, "" when absent
    span_id: int


def task_spans(exporter: InMemorySpanExporter) -> list[TaskSpan]:
    """Return the spans of background tasks (and of collectors run as one task), in end order."""
    spans = exporter.get_finished_spans()
    by_id: dict[int, ReadableSpan] = {s.context.span_id: s for s in spans if s.context}
    result = []
    for span in spans:
        if not span.name.startswith(("BackgroundTask", "fastapi.background_task")):
            continue
        assert span.parent is not None
        assert span.context is not None
        parent = by_id[span.parent.span_id]
        attributes = dict(span.attributes or {})
        result.append(
            TaskSpan(
                name=span.name,
                parent="request" if parent.parent is None else parent.name,
                status=span.status.status_code,
                function=str(attributes.get("code.function.name", "")),
                span_id=span.context.span_id,
            )
        )
    return result


def shape(spans: list[TaskSpan]) -> list[tuple[str, str, StatusCode, str]]:
    return [(s.name, s.parent, s.status, s.function) for s in spans]


def current_spans(spans: list[TaskSpan], seen: Seen, prefix: str) -> list[str]:
    """Name the span that was current in each task, by tag order."""
    names = {s.span_id: s.name for s in spans}
    return [names.get(seen[f"{prefix}{i}"], "not a task span") for i in range(1, 6)]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


async def get(app: ASGIApp, path: str) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.get(path)


def side_by_side_app(seen: Seen, **options: Any) -> fastapi.FastAPI:
    """Return an app queueing the same tasks three ways.

    /stock on FastAPI's collector, /ours on afterward's given as the response's `background`,
    /dropin on the `afterward.fastapi` drop-in.
    """
    app = fastapi.FastAPI(**options)

    @app.get("/stock")
    def stock(background_tasks: fastapi.BackgroundTasks) -> dict[str, str]:
        queue(background_tasks, seen, "s")
        return {}

    @app.get("/ours")
    def ours() -> Response:
        tasks = afterward.BackgroundTasks()
        queue(tasks, seen, "a")
        return JSONResponse({}, background=tasks)

    @app.get("/dropin")
    def dropin(background_tasks: afterward.fastapi.BackgroundTasks) -> dict[str, str]:
        queue(background_tasks, seen, "d")
        return {}

    return app


async def run_side_by_side(
    app: ASGIApp, exporter: InMemorySpanExporter, path: str
) -> list[TaskSpan]:
    exporter.clear()
    await get(app, path)
    return task_spans(exporter)


# --- opentelemetry-instrumentation-fastapi ---------------------------------------------------


@pytest.fixture
def otel_app(provider: TracerProvider, seen: Seen) -> Iterator[fastapi.FastAPI]:
    app = side_by_side_app(seen)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    yield app
    FastAPIInstrumentor.uninstrument_app(app)


@pytest.fixture
def seen() -> Seen:
    return {}


OTEL_TASKS = [
    ("BackgroundTask send_email", "request", StatusCode.UNSET, ""),
    ("BackgroundTask write_log", "request", StatusCode.UNSET, ""),
    ("BackgroundTask notify", "request", StatusCode.UNSET, ""),
    ("BackgroundTask Audit", "request", StatusCode.UNSET, ""),
    ("BackgroundTask fail", "request", StatusCode.ERROR, ""),
]


async def test_otel_fastapi_gives_each_afterward_task_the_span_a_starlette_task_gets(
    otel_app: fastapi.FastAPI, exporter: InMemorySpanExporter, seen: Seen
) -> None:
    stock = await run_side_by_side(otel_app, exporter, "/stock")
    ours = await run_side_by_side(otel_app, exporter, "/ours")

    assert shape(stock) == OTEL_TASKS  # what we hold ourselves to
    assert shape(ours) == shape(stock)
    names = [name for name, *_ in OTEL_TASKS]
    assert current_spans(stock, seen, "s") == names
    assert current_spans(ours, seen, "a") == names


async def test_otel_fastapi_gives_each_dropin_task_the_span_a_starlette_task_gets(
    otel_app: fastapi.FastAPI, exporter: InMemorySpanExporter, seen: Seen
) -> None:
    # The drop-in runs its collector as one entry of FastAPI's collector: that entry gets no span,
    # so each task's span sits directly under the request's, as FastAPI's own tasks' do.
    stock = await run_side_by_side(otel_app, exporter, "/stock")
    spans = await run_side_by_side(otel_app, exporter, "/dropin")

    assert shape(spans) == shape(stock) == OTEL_TASKS
    assert current_spans(spans, seen, "d") == [name for name, *_ in OTEL_TASKS]


async def test_failing_task_marks_its_span_and_is_still_isolated_and_logged(
    otel_app: fastapi.FastAPI,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    seen: Seen,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = afterward.BackgroundTasks()
    tasks.add_task(fail, seen, "failing")
    tasks.add_task(notify, seen, "next")
    exporter.clear()
    with (
        caplog.at_level(logging.ERROR, logger="afterward"),
        trace.get_tracer("t", tracer_provider=provider).start_as_current_span("r"),
    ):
        await tasks()

    failed, after = exporter.get_finished_spans()[:2]
    assert (failed.name, failed.status.status_code) == ("BackgroundTask fail", StatusCode.ERROR)
    assert [event.name for event in failed.events] == ["exception"]
    assert (after.name, after.status.status_code) == ("BackgroundTask notify", StatusCode.UNSET)
    assert after.context is not None
    assert seen["next"] == after.context.span_id
    [record] = caplog.records
    assert record.getMessage() == (
        f"Background task {__name__}.fail failed; the remaining tasks still run."
    )
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


async def test_starlette_task_in_an_afterward_collector_keeps_its_span(
    otel_app: fastapi.FastAPI, provider: TracerProvider, exporter: InMemorySpanExporter, seen: Seen
) -> None:
    tasks = afterward.BackgroundTasks([StarletteTask(send_email, seen, "x")])
    tasks.add_task(notify, seen, "y")

    exporter.clear()
    with trace.get_tracer("t", tracer_provider=provider).start_as_current_span("r"):
        await tasks()

    spans = task_spans(exporter)
    assert [s.name for s in spans] == ["BackgroundTask send_email", "BackgroundTask notify"]
    assert [seen["x"], seen["y"]] == [s.span_id for s in spans]


# --- FastAPI's native telemetry ---------------------------------------------------------------


@pytest.fixture
def native_app(provider: TracerProvider, seen: Seen) -> fastapi.FastAPI:
    telemetry = {"tracer_provider": provider, "metrics": False, "logs": False}
    return side_by_side_app(seen, telemetry=telemetry)


NATIVE_TASKS = [
    ("fastapi.background_task", "request", StatusCode.UNSET, f"{__name__}.send_email"),
    ("fastapi.background_task", "request", StatusCode.UNSET, f"{__name__}.write_log"),
    ("fastapi.background_task", "request", StatusCode.UNSET, f"{__name__}.notify"),
    ("fastapi.background_task", "request", StatusCode.UNSET, f"{__name__}.Audit"),
    ("fastapi.background_task", "request", StatusCode.ERROR, f"{__name__}.fail"),
]


async def test_fastapi_telemetry_gives_each_afterward_task_the_span_a_fastapi_task_gets(
    native_app: fastapi.FastAPI, exporter: InMemorySpanExporter, seen: Seen
) -> None:
    stock = await run_side_by_side(native_app, exporter, "/stock")
    ours = await run_side_by_side(native_app, exporter, "/ours")

    assert shape(stock) == NATIVE_TASKS
    assert shape(ours) == shape(stock)
    names = ["fastapi.background_task"] * 5
    assert current_spans(stock, seen, "s") == names
    assert [seen[f"a{i}"] for i in range(1, 6)] == [s.span_id for s in ours]


async def test_fastapi_telemetry_gives_each_dropin_task_the_span_a_fastapi_task_gets(
    native_app: fastapi.FastAPI, exporter: InMemorySpanExporter, seen: Seen
) -> None:
    stock = await run_side_by_side(native_app, exporter, "/stock")
    spans = await run_side_by_side(native_app, exporter, "/dropin")

    assert shape(spans) == shape(stock) == NATIVE_TASKS
    assert [seen[f"d{i}"] for i in range(1, 6)] == [s.span_id for s in spans]


async def test_with_otel_instrumentation_too_fastapi_defers_and_afterward_matches_it(
    provider: TracerProvider, exporter: InMemorySpanExporter, seen: Seen
) -> None:
    # FastAPI turns its own request and operation spans off under the OpenTelemetry middleware,
    # while its telemetry still observes the request: afterward goes through both hooks.
    app = side_by_side_app(seen, telemetry={"tracer_provider": provider, "metrics": False})
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    try:
        stock = await run_side_by_side(app, exporter, "/stock")
        ours = await run_side_by_side(app, exporter, "/ours")
        dropin = await run_side_by_side(app, exporter, "/dropin")
    finally:
        FastAPIInstrumentor.uninstrument_app(app)

    assert shape(stock) == OTEL_TASKS
    assert shape(ours) == shape(dropin) == shape(stock)


# --- the drop-in next to FastAPI's collector, a response's own background, a websocket ----------


def native_or_otel_app(
    tool: str, provider: TracerProvider, seen: Seen
) -> tuple[fastapi.FastAPI, Callable[[], None]]:
    """Return an app traced by `tool` ("native": FastAPI's telemetry, "otel": the
    instrumentation), with the function that undoes the instrumentation."""
    if tool == "native":
        telemetry = {"tracer_provider": provider, "metrics": False, "logs": False}
        return side_by_side_app(seen, telemetry=telemetry), lambda: None
    app = side_by_side_app(seen)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    return app, partial(FastAPIInstrumentor.uninstrument_app, app)


TOOLS = pytest.mark.parametrize("tool", ["native", "otel"])


@TOOLS
async def test_dropin_and_fastapi_tasks_of_one_request_get_fastapi_s_spans_in_add_order(
    tool: str, provider: TracerProvider, exporter: InMemorySpanExporter, seen: Seen
) -> None:
    # The drop-in's collector is one entry of FastAPI's, before the tasks added to FastAPI's
    # after it was resolved: those keep FastAPI's semantics, a failure stops the rest.
    app, uninstrument = native_or_otel_app(tool, provider, seen)
    calls: list[tuple[Callable[[Seen, str], object], str]] = [
        (send_email, "1"),
        (notify, "2"),
        (write_log, "3"),
        (fail, "4"),
        (Audit(), "5"),
    ]

    @app.get("/mixed")
    def mixed(
        background_tasks: afterward.fastapi.BackgroundTasks, native: fastapi.BackgroundTasks
    ) -> dict[str, str]:
        for tasks, (func, tag) in zip([background_tasks] * 2 + [native] * 3, calls, strict=True):
            tasks.add_task(func, seen, f"m{tag}")
        return {}

    @app.get("/all-native")
    def all_native(native: fastapi.BackgroundTasks) -> dict[str, str]:
        for func, tag in calls:
            native.add_task(func, seen, f"n{tag}")
        return {}

    try:
        stock = await run_side_by_side(app, exporter, "/all-native")
        spans = await run_side_by_side(app, exporter, "/mixed")
    finally:
        uninstrument()

    send, log, note, _, failed = NATIVE_TASKS if tool == "native" else OTEL_TASKS
    assert shape(spans) == shape(stock) == [send, note, log, failed]
    assert [seen.get(f"m{i}") for i in range(1, 6)] == [*(s.span_id for s in spans), None]


def configured_tasks() -> afterward.BackgroundTasks:
    return afterward.BackgroundTasks(stop_on_error=True)


ConfiguredTasks = Annotated[
    afterward.BackgroundTasks, afterward.fastapi.tasks_from(configured_tasks)
]


@TOOLS
async def test_two_dropin_collectors_of_one_request_each_trace_their_tasks_in_place(
    tool: str, provider: TracerProvider, exporter: InMemorySpanExporter, seen: Seen
) -> None:
    # Each collector is an entry of FastAPI's collector, in the order they were resolved.
    app, uninstrument = native_or_otel_app(tool, provider, seen)

    @app.get("/two")
    def two(
        configured: ConfiguredTasks,
        native: fastapi.BackgroundTasks,
        plain: afterward.fastapi.BackgroundTasks,
    ) -> dict[str, str]:
        plain.add_task(notify, seen, "p")
        native.add_task(write_log, seen, "n")
        configured.add_task(send_email, seen, "c")
        return {}

    try:
        spans = await run_side_by_side(app, exporter, "/two")
    finally:
        uninstrument()

    send, log, note, *_ = NATIVE_TASKS if tool == "native" else OTEL_TASKS
    assert shape(spans) == [send, note, log]
    assert [seen["c"], seen["p"], seen["n"]] == [s.span_id for s in spans]


@TOOLS
async def test_dropin_tasks_after_a_response_s_own_background_get_their_spans_under_the_request(
    tool: str, provider: TracerProvider, exporter: InMemorySpanExporter, seen: Seen
) -> None:
    # FastAPI drops its collector, with our entry, for a Response that has a `background`: the
    # drop-in runs its tasks at its dependency's exit, and traces them there.
    app, uninstrument = native_or_otel_app(tool, provider, seen)

    @app.get("/own")
    def own(background_tasks: afterward.fastapi.BackgroundTasks) -> Response:
        background_tasks.add_task(send_email, seen, "d")
        own = fastapi.BackgroundTasks()
        own.add_task(write_log, seen, "o")
        return JSONResponse({}, background=own)

    try:
        spans = await run_side_by_side(app, exporter, "/own")
    finally:
        uninstrument()

    if tool == "native":
        assert shape(spans) == [NATIVE_TASKS[1], NATIVE_TASKS[0]]
    else:
        assert shape(spans) == [OTEL_TASKS[1], OTEL_TASKS[0]]
    assert [seen["o"], seen["d"]] == [s.span_id for s in spans]


@TOOLS
async def test_dropin_tasks_of_a_websocket_route_get_their_spans_under_the_connection(
    tool: str, provider: TracerProvider, exporter: InMemorySpanExporter, seen: Seen
) -> None:
    app, uninstrument = native_or_otel_app(tool, provider, seen)

    @app.websocket("/ws")
    async def handler(
        websocket: fastapi.WebSocket, background_tasks: afterward.fastapi.BackgroundTasks
    ) -> None:
        await websocket.accept()
        background_tasks.add_task(send_email, seen, "w1")
        background_tasks.add_task(fail, seen, "w2")
        await websocket.close()

    incoming: list[dict[str, Any]] = [
        {"type": "websocket.connect"},
        {"type": "websocket.disconnect", "code": 1000},
    ]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        pass

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "server": ("test", 80),
        "subprotocols": [],
    }
    exporter.clear()
    try:
        await app(scope, receive, send)
    finally:
        uninstrument()

    spans = task_spans(exporter)
    expected = NATIVE_TASKS if tool == "native" else OTEL_TASKS
    assert shape(spans) == [expected[0], expected[4]]
    assert [seen["w1"], seen["w2"]] == [s.span_id for s in spans]


# --- logfire ----------------------------------------------------------------------------------


async def test_logfire_gives_each_afterward_task_the_span_a_starlette_task_gets(
    exporter: InMemorySpanExporter, seen: Seen
) -> None:
    instance = logfire.configure(
        local=True,
        send_to_logfire=False,
        console=False,
        metrics=False,
        additional_span_processors=[SimpleSpanProcessor(exporter)],
    )
    app = side_by_side_app(seen)
    instance.instrument_fastapi(app)
    try:
        stock = await run_side_by_side(app, exporter, "/stock")
        ours = await run_side_by_side(app, exporter, "/ours")
        dropin = await run_side_by_side(app, exporter, "/dropin")
    finally:
        FastAPIInstrumentor.uninstrument_app(app)

    assert [(name, status) for name, _, status, _ in shape(stock)] == [
        (name, status) for name, _, status, _ in OTEL_TASKS
    ]
    assert shape(ours) == shape(dropin) == shape(stock)
    names = [name for name, *_ in OTEL_TASKS]
    assert current_spans(ours, seen, "a") == current_spans(dropin, seen, "d") == names


# --- opentelemetry-instrumentation-starlette: no task spans, for Starlette's tasks either -------


async def test_starlette_instrumentation_traces_no_task_starlette_or_afterward(
    provider: TracerProvider, exporter: InMemorySpanExporter, seen: Seen
) -> None:
    async def stock(request: Request) -> Response:
        tasks = StarletteTasks()
        queue(tasks, seen, "s")
        return JSONResponse({}, background=tasks)

    async def ours(request: Request) -> Response:
        tasks = afterward.BackgroundTasks()
        queue(tasks, seen, "a")
        return JSONResponse({}, background=tasks)

    app = Starlette(routes=[Route("/stock", stock), Route("/ours", ours)])
    StarletteInstrumentor.instrument_app(app, tracer_provider=provider)
    try:
        stock_spans = await run_side_by_side(app, exporter, "/stock")
        ours_spans = await run_side_by_side(app, exporter, "/ours")
    finally:
        StarletteInstrumentor.uninstrument_app(app)

    assert stock_spans == ours_spans == []
    assert _tracing.active_hook() is None


# --- the hook itself ----------------------------------------------------------------------------


def test_no_hook_without_instrumentation(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _tracing.active_hook() is None  # FastAPI imported, its telemetry off
    monkeypatch.delitem(sys.modules, "fastapi.telemetry")
    assert _tracing.active_hook() is None  # a FastAPI without native telemetry


def test_the_quick_no_telemetry_answer_reads_opentelemetry_s_own_context_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The quick answer (no FastAPI telemetry while OpenTelemetry's context is empty) needs the
    # variable; if a release of opentelemetry-api kept it elsewhere, every run would ask FastAPI.
    monkeypatch.setattr(_tracing, "_otel_context", _tracing._UNKNOWN)
    assert _tracing.active_hook() is None  # FastAPI imported: the variable is found
    variable = _tracing._otel_context
    assert isinstance(variable, contextvars.ContextVar)
    assert not variable.get(None)
    with trace.get_tracer("t", tracer_provider=TracerProvider()).start_as_current_span("r"):
        assert variable.get(None)
        assert _tracing.active_hook() is None  # a span, but no FastAPI telemetry


def test_another_runtime_context_gives_no_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    import opentelemetry.context

    monkeypatch.setattr(opentelemetry.context, "_RUNTIME_CONTEXT", object())
    monkeypatch.setattr(_tracing, "_otel_context", _tracing._UNKNOWN)
    assert _tracing._find_otel_context() is None
    assert _tracing._otel_context is None  # remembered: FastAPI is asked from now on


async def test_without_opentelemetry_s_variable_fastapi_is_asked_on_every_run(
    monkeypatch: pytest.MonkeyPatch,
    native_app: fastapi.FastAPI,
    exporter: InMemorySpanExporter,
    seen: Seen,
) -> None:
    monkeypatch.setattr(_tracing, "_otel_context", None)
    stock = await run_side_by_side(native_app, exporter, "/stock")
    ours = await run_side_by_side(native_app, exporter, "/ours")

    assert shape(ours) == shape(stock) == NATIVE_TASKS
    assert [seen[f"a{i}"] for i in range(1, 6)] == [s.span_id for s in ours]


async def test_an_async_task_keeps_its_span_current_across_suspensions(
    otel_app: fastapi.FastAPI, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    current: list[int] = []

    async def suspends() -> None:
        for _ in range(3):
            current.append(trace.get_current_span().get_span_context().span_id)
            await anyio.lowlevel.checkpoint()

    tasks = afterward.BackgroundTasks()
    tasks.add_task(suspends)
    with trace.get_tracer("t", tracer_provider=provider).start_as_current_span("r"):
        await tasks()

    [span] = task_spans(exporter)
    assert current == [span.span_id] * 3


def test_a_wrapper_that_keeps_the_original_name_is_still_recognised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = StarletteTask.__call__

    async def traced(self: StarletteTask) -> None:
        await original(self)

    traced.__module__ = original.__module__
    traced.__qualname__ = original.__qualname__
    traced.__wrapped__ = original  # type: ignore[attr-defined]  # what functools.wraps sets
    monkeypatch.setattr(StarletteTask, "__call__", traced)
    assert _tracing.active_hook() == _tracing.TraceHook(fastapi_tasks=None)


async def test_a_wrapper_that_never_calls_the_task_is_reported_as_its_failure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, seen: Seen
) -> None:
    async def swallow(self: StarletteTask) -> None:
        return None

    monkeypatch.setattr(StarletteTask, "__call__", swallow)
    tasks = afterward.BackgroundTasks()
    tasks.add_task(send_email, seen, "lost")
    tasks.add_task(notify, seen, "after")

    with caplog.at_level(logging.ERROR, logger="afterward"):
        await tasks()

    assert seen == {}
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        f"Background task {__name__}.send_email failed; the remaining tasks still run.",
        f"Background task {__name__}.notify failed; the remaining tasks still run.",
    ]
    error = caplog.records[0].exc_info
    assert error is not None
    assert "returned without calling the task" in str(error[1])


async def test_traced_tasks_run_in_their_captured_context_on_afterwards_limiter(
    otel_app: fastapi.FastAPI, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    variable: contextvars.ContextVar[str] = contextvars.ContextVar("variable", default="unset")
    limiter = anyio.CapacityLimiter(1)
    found: list[tuple[str, float]] = []

    def sync_task() -> None:
        found.append((variable.get(), limiter.borrowed_tokens))

    async def async_task() -> None:
        found.append((variable.get(), -1))

    tasks = afterward.BackgroundTasks(limiter=limiter)
    token = variable.set("captured")
    tasks.add_task(sync_task)
    tasks.add_task(async_task)
    variable.reset(token)
    with trace.get_tracer("t", tracer_provider=provider).start_as_current_span("r"):
        await tasks()

    assert found == [("captured", 1), ("captured", -1)]
    assert [s.name for s in task_spans(exporter)] == [
        "BackgroundTask sync_task",
        "BackgroundTask async_task",
    ]


async def test_a_sync_task_returning_an_awaitable_is_awaited_in_its_span(
    otel_app: fastapi.FastAPI, provider: TracerProvider, exporter: InMemorySpanExporter, seen: Seen
) -> None:
    def wraps_async(seen: Seen, tag: str) -> Any:
        return notify(seen, tag)

    tasks = afterward.BackgroundTasks()
    tasks.add_task(partial(wraps_async, seen), "w")
    with trace.get_tracer("t", tracer_provider=provider).start_as_current_span("r"):
        await tasks()

    [span] = task_spans(exporter)
    assert span.name == "BackgroundTask partial"
    assert seen["w"] == span.span_id


def test_importing_afterward_imports_no_tracing_package() -> None:
    code = (
        "import sys, afterward; "
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'logfire'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
