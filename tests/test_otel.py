"""`afterward.otel`: a span per task attempt, a child of the request's span, with its outcome.

The request's span comes from OpenTelemetry's ASGI middleware (what every ASGI instrumentation,
Starlette's and FastAPI's included, is built on); the spans go to the SDK's in-memory exporter.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import fastapi
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

import afterward
import afterward.fastapi
from afterward import BackgroundTasks, BackgroundTasksMiddleware, current_tasks, otel
from afterward._events import scopes
from test_middleware import client, running

pytestmark = pytest.mark.anyio

Queue = Callable[[BackgroundTasks], object]
"""What an endpoint does with its request's collector."""


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def instrumented(provider: TracerProvider) -> Iterator[TracerProvider]:
    otel.instrument(tracer_provider=provider)
    yield provider
    otel.uninstrument()


def inline_app(queue: Queue, provider: TracerProvider) -> ASGIApp:
    """A traced app whose endpoint queues tasks on a collector run inline as its `background`."""

    async def endpoint(request: Request) -> Response:
        tasks = BackgroundTasks()
        queue(tasks)
        return PlainTextResponse("ok", background=tasks)

    app = Starlette(routes=[Route("/", endpoint)])
    return OpenTelemetryMiddleware(app, tracer_provider=provider)


def detached_app(queue: Queue, provider: TracerProvider) -> BackgroundTasksMiddleware:
    """A traced app under the middleware: the request's span ends before its tasks start."""

    async def endpoint(request: Request) -> Response:
        queue(current_tasks())
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", endpoint)])
    return BackgroundTasksMiddleware(OpenTelemetryMiddleware(app, tracer_provider=provider))


async def serve_one(mode: str, queue: Queue, provider: TracerProvider) -> None:
    """Send one request, traced, and return once its tasks have all ended."""
    if mode == "inline":
        app = inline_app(queue, provider)
        async with client(app) as http:
            assert (await http.get("/")).status_code == 200
        return
    middleware = detached_app(queue, provider)
    async with (
        running(middleware),
        client(middleware) as http,
    ):
        assert (await http.get("/")).status_code == 200
        assert middleware.supervisor is not None
        with anyio.fail_after(5):
            await middleware.supervisor.wait_idle()


def request_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    [span] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    return span


def attempt_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """The attempt spans, in the order the attempts started."""
    spans = [s for s in exporter.get_finished_spans() if s.name.startswith("afterward ")]
    return sorted(spans, key=lambda s: s.start_time or 0)


def parent_id(span: ReadableSpan) -> int:
    assert span.parent is not None
    return span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    found: int = span.context.span_id
    return found


def outline(span: ReadableSpan) -> tuple[str, Any, Any, SpanKind, StatusCode]:
    attributes = span.attributes or {}
    return (
        span.name,
        attributes[otel.ATTEMPT],
        attributes[otel.OUTCOME],
        span.kind,
        span.status.status_code,
    )


def current_span_id() -> int:
    span_id: int = trace.get_current_span().get_span_context().span_id
    return span_id


def send_email(seen: list[int]) -> None:
    seen.append(current_span_id())


async def notify(seen: list[int]) -> None:
    seen.append(current_span_id())
    await anyio.lowlevel.checkpoint()
    seen.append(current_span_id())


MODES = pytest.mark.parametrize("mode", ["inline", "detached"])


@MODES
async def test_each_task_gets_a_span_under_the_request_s_span_current_while_it_runs(
    mode: str, instrumented: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    seen_sync: list[int] = []
    seen_async: list[int] = []
    handles: list[afterward.BackgroundTask] = []

    def queue(tasks: BackgroundTasks) -> None:
        handles.append(tasks.add_task(send_email, seen_sync))
        handles.append(tasks.add_task(notify, seen_async))

    await serve_one(mode, queue, instrumented)

    request = request_span(exporter)
    sync_span, async_span = attempt_spans(exporter)
    assert [outline(sync_span), outline(async_span)] == [
        (f"afterward {__name__}.send_email", 1, "succeeded", SpanKind.INTERNAL, StatusCode.UNSET),
        (f"afterward {__name__}.notify", 1, "succeeded", SpanKind.INTERNAL, StatusCode.UNSET),
    ]
    assert parent_id(sync_span) == parent_id(async_span) == span_id(request)
    assert sync_span.context is not None
    assert request.context is not None
    assert sync_span.context.trace_id == request.context.trace_id
    # The attempt's span is current inside the task, across suspensions, in its thread too.
    assert seen_sync == [span_id(sync_span)]
    assert seen_async == [span_id(async_span)] * 2
    for handle, span in zip(handles, (sync_span, async_span), strict=True):
        attributes = span.attributes or {}
        assert (attributes[otel.NAME], attributes[otel.ID]) == (handle.name, handle.id)


def flaky(failures: int, seen: list[int]) -> Callable[[], None]:
    """A sync function that raises `failures` times, then returns."""

    def send_invoice() -> None:
        seen.append(current_span_id())
        if len(seen) <= failures:
            raise ConnectionError(f"attempt {len(seen)}: the mail server is down")

    return send_invoice


def flaky_async(failures: int, seen: list[int]) -> Callable[[], Any]:
    async def send_invoice() -> None:
        seen.append(current_span_id())
        await anyio.lowlevel.checkpoint()
        if len(seen) <= failures:
            raise ConnectionError(f"attempt {len(seen)}: the mail server is down")

    return send_invoice


KINDS = pytest.mark.parametrize("make", [flaky, flaky_async], ids=["sync", "async"])


@MODES
@KINDS
async def test_a_retried_task_has_one_span_per_attempt_each_under_the_request(
    mode: str,
    make: Callable[[int, list[int]], Callable[[], Any]],
    instrumented: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    seen: list[int] = []
    func = afterward.task(make(2, seen), retries=3, name="billing.send_invoice")
    await serve_one(mode, lambda tasks: tasks.add_task(func), instrumented)

    spans = attempt_spans(exporter)
    name = "afterward billing.send_invoice"
    assert [outline(s) for s in spans] == [
        (name, 1, "retrying", SpanKind.INTERNAL, StatusCode.ERROR),
        (name, 2, "retrying", SpanKind.INTERNAL, StatusCode.ERROR),
        (name, 3, "succeeded", SpanKind.INTERNAL, StatusCode.UNSET),
    ]
    # Siblings, not nested in one another: each attempt starts from the captured context.
    assert {parent_id(s) for s in spans} == {span_id(request_span(exporter))}
    assert seen == [span_id(s) for s in spans]
    errors = [[e.attributes for e in s.events if e.name == "exception"] for s in spans]
    assert [[dict(a or {}).get("exception.type") for a in e] for e in errors] == [
        ["ConnectionError"],
        ["ConnectionError"],
        [],
    ]
    assert spans[0].status.description == "ConnectionError: attempt 1: the mail server is down"


@MODES
@KINDS
async def test_a_final_failure_is_recorded_on_the_last_attempt_s_span(
    mode: str,
    make: Callable[[int, list[int]], Callable[[], Any]],
    instrumented: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    seen: list[int] = []
    func = afterward.task(make(5, seen), retries=1, name="billing.send_invoice")
    await serve_one(mode, lambda tasks: tasks.add_task(func), instrumented)

    spans = attempt_spans(exporter)
    assert [outline(s)[1:3] for s in spans] == [(1, "retrying"), (2, "failed")]
    assert [s.status.status_code for s in spans] == [StatusCode.ERROR] * 2
    [event] = [e for e in spans[1].events if e.name == "exception"]
    assert dict(event.attributes or {})["exception.message"] == (
        "attempt 2: the mail server is down"
    )


async def test_an_exception_not_retried_is_a_failure_at_its_first_attempt(
    instrumented: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    def broken() -> None:
        raise ValueError("bad template")

    func = afterward.task(broken, retries=3, retry_on=(ConnectionError,))
    await serve_one("inline", lambda tasks: tasks.add_task(func), instrumented)

    [span] = attempt_spans(exporter)
    assert outline(span)[1:] == (1, "failed", SpanKind.INTERNAL, StatusCode.ERROR)


async def test_a_task_cancelled_at_the_drain_deadline_ends_its_span_as_cancelled(
    instrumented: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    started = anyio.Event()

    async def stuck() -> None:
        started.set()
        await anyio.sleep_forever()

    async def endpoint(request: Request) -> Response:
        current_tasks().add_task(stuck)
        return PlainTextResponse("ok")

    app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]), drain_timeout=0)
    async with (
        running(app),
        client(app) as http,
    ):
        await http.get("/")
        with anyio.fail_after(5):
            await started.wait()

    [span] = attempt_spans(exporter)
    assert outline(span)[1:] == (1, "cancelled", SpanKind.INTERNAL, StatusCode.UNSET)
    assert span.parent is None  # no request span here: the attempt's span is a root


async def test_a_task_run_outside_any_span_gets_a_root_span(
    instrumented: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    seen: list[int] = []
    tasks = BackgroundTasks()
    tasks.add_task(send_email, seen)
    await tasks()

    [span] = attempt_spans(exporter)
    assert span.parent is None
    assert seen == [span_id(span)]


async def test_not_instrumented_no_scope_is_registered_and_no_span_is_made(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    assert not otel.is_instrumented()
    assert scopes == []
    await serve_one("inline", lambda tasks: tasks.add_task(send_email, []), provider)
    assert attempt_spans(exporter) == []
    assert len(exporter.get_finished_spans()) > 0  # the request was traced


async def test_instrument_twice_then_uninstrument_twice(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    other = TracerProvider()
    otel.instrument(tracer_provider=provider)
    otel.instrument(tracer_provider=other)  # ignored: already instrumented
    try:
        assert otel.is_instrumented()
        assert len(scopes) == 1
        await serve_one("inline", lambda tasks: tasks.add_task(send_email, []), provider)
    finally:
        otel.uninstrument()
        otel.uninstrument()
    assert not otel.is_instrumented()
    assert scopes == []
    assert len(attempt_spans(exporter)) == 1

    exporter.clear()
    await serve_one("inline", lambda tasks: tasks.add_task(send_email, []), provider)
    assert attempt_spans(exporter) == []


def test_a_provider_that_is_not_one_is_refused() -> None:
    with pytest.raises(TypeError, match=r"tracer_provider must be an opentelemetry"):
        otel.instrument(tracer_provider="console")  # type: ignore[arg-type]
    assert not otel.is_instrumented()


def test_the_global_provider_is_used_when_none_is_given() -> None:
    # In a fresh interpreter: the global provider can be set only once per process.
    code = """
import anyio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
import afterward, afterward.otel

afterward.otel.instrument()  # before the app sets its provider: the proxy resolves later
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

def job() -> None: ...

async def main() -> None:
    tasks = afterward.BackgroundTasks()
    tasks.add_task(job)
    await tasks()

anyio.run(main)
print([s.name for s in exporter.get_finished_spans()])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['afterward __main__.job']"


# --- next to FastAPI's instrumentation, which traces each task itself (see _tracing) ----------


async def test_with_fastapi_instrumented_the_attempt_spans_nest_in_its_task_spans(
    instrumented: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    seen: list[int] = []
    app = fastapi.FastAPI()
    func = afterward.task(flaky(1, seen), retries=1, name="billing.send_invoice")

    @app.get("/")
    def endpoint(background_tasks: afterward.fastapi.BackgroundTasks) -> dict[str, str]:
        background_tasks.add_task(func)
        background_tasks.add_task(send_email, seen)
        return {}

    FastAPIInstrumentor.instrument_app(app, tracer_provider=instrumented)
    try:
        async with client(app) as http:
            await http.get("/")
    finally:
        FastAPIInstrumentor.uninstrument_app(app)

    spans = {span_id(s): s for s in exporter.get_finished_spans()}
    request = request_span(exporter)
    tree = [
        (s.name, spans[parent_id(s)].name, parent_id(spans[parent_id(s)]) == span_id(request))
        for s in attempt_spans(exporter)
    ]
    # One framework span per task (all of its attempts), one of ours per attempt, inside it.
    assert tree == [
        ("afterward billing.send_invoice", "BackgroundTask send_invoice", True),
        ("afterward billing.send_invoice", "BackgroundTask send_invoice", True),
        (f"afterward {__name__}.send_email", "BackgroundTask send_email", True),
    ]
    assert seen == [span_id(s) for s in attempt_spans(exporter)]


async def test_a_sampled_out_attempt_runs_without_a_span_or_an_error(
    exporter: InMemorySpanExporter,
) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.instrument(tracer_provider=provider)
    try:
        tasks = BackgroundTasks()
        handle = tasks.add_task(afterward.task(flaky(1, []), retries=1))
        await tasks()
    finally:
        otel.uninstrument()
        provider.shutdown()

    assert (handle.status, handle.attempts) == ("succeeded", 2)
    assert exporter.get_finished_spans() == ()


def test_without_the_api_installed_the_import_says_what_to_install() -> None:
    code = """
import sys
sys.modules["opentelemetry"] = None  # as if it were not installed
try:
    import afterward.otel
except ModuleNotFoundError as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (
        "afterward.otel needs the OpenTelemetry API, which is not installed: "
        'pip install "afterward[otel]" (or opentelemetry-api).'
    )
