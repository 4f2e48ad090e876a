"""OpenTelemetry for afterward's tasks: a span per attempt, under the request's span.

`afterward.otel.instrument()` registers an attempt scope (`afterward.add_attempt_scope`) that
opens one span around every attempt of every task, named `afterward <task name>`, of kind
INTERNAL. The scope is entered inside the attempt's context, the `contextvars` captured at
`add_task`: the span current there, the request's span under an instrumented server or
framework, is its parent, and the span is current while the attempt runs, so whatever the task
traces (an HTTP call, a query) nests under it. Each span carries the task's name, id and
attempt number, and how the attempt ended (`afterward.task.outcome`); a failed attempt records
its exception and has status ERROR.

Needs `opentelemetry-api` (`pip install "afterward[otel]"`); the SDK and exporters are the
app's. Not instrumented, afterward costs nothing for it: no scope is registered, and importing
`afterward` imports no OpenTelemetry package.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

try:
    from opentelemetry import context as context_api
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - tested in a subprocess without the package
    raise ModuleNotFoundError(
        "afterward.otel needs the OpenTelemetry API, which is not installed: "
        'pip install "afterward[otel]" (or opentelemetry-api).',
        name=exc.name,
    ) from exc

from . import __version__
from ._events import add_attempt_scope

if TYPE_CHECKING:
    from ._call import Call

__all__ = [
    "ATTEMPT",
    "ID",
    "NAME",
    "OUTCOME",
    "instrument",
    "is_instrumented",
    "uninstrument",
]

NAME = "afterward.task.name"
"""Span attribute: the task's name (`task.name`)."""
ID = "afterward.task.id"
"""Span attribute: the task's id (`task.id`)."""
ATTEMPT = "afterward.task.attempt"
"""Span attribute: the attempt's number, 1 for the first."""
OUTCOME = "afterward.task.outcome"
"""Span attribute: how the attempt ended: `succeeded`, `retrying` (it failed and another attempt
follows), `failed` (it failed and was the last), or `cancelled`."""

_lock = threading.Lock()
_remove: Callable[[], None] | None = None


def instrument(*, tracer_provider: trace.TracerProvider | None = None) -> None:
    """Open a span around every attempt of every afterward task, from now on.

    Calling it again while instrumented does nothing (call `uninstrument()` first to change the
    provider).

    Args:
        tracer_provider: Where the spans go; the global one (`trace.set_tracer_provider`)
            unless given. With the global one, a provider set after this call is used too.

    Raises:
        TypeError: `tracer_provider` is not an OpenTelemetry `TracerProvider`.
    """
    global _remove
    if tracer_provider is not None and not isinstance(tracer_provider, trace.TracerProvider):
        raise TypeError(
            f"tracer_provider must be an opentelemetry.trace.TracerProvider (such as the SDK's "
            f"opentelemetry.sdk.trace.TracerProvider()), or None for the global one, got "
            f"{tracer_provider!r}."
        )
    with _lock:
        if _remove is not None:
            return
        tracer = trace.get_tracer("afterward", __version__, tracer_provider=tracer_provider)

        def scope(task: Call, attempt: int) -> _AttemptSpan:
            return _AttemptSpan(tracer, task, attempt)

        _remove = add_attempt_scope(scope)


def uninstrument() -> None:
    """Stop opening spans for new attempts; those already open end as usual. Idempotent."""
    global _remove
    with _lock:
        remove, _remove = _remove, None
    if remove is not None:
        remove()


def is_instrumented() -> bool:
    """Return whether `instrument()` is in effect."""
    return _remove is not None


class _AttemptSpan:
    """The span of one attempt: started and made current on entry, ended on exit."""

    __slots__ = ("_attempt", "_span", "_task", "_token", "_tracer")

    def __init__(self, tracer: trace.Tracer, task: Call, attempt: int) -> None:
        self._tracer = tracer
        self._task = task
        self._attempt = attempt

    def __enter__(self) -> trace.Span:
        task = self._task
        # No `context=`: the parent is the span current in the attempt's context.
        span = self._tracer.start_span(
            f"afterward {task.name}",
            kind=SpanKind.INTERNAL,
            attributes={NAME: task.name, ID: task.id, ATTEMPT: self._attempt},
        )
        self._span = span
        self._token = context_api.attach(trace.set_span_in_context(span))
        return span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        span = self._span
        try:
            if span.is_recording():
                span.set_attribute(OUTCOME, self._outcome(exc))
                if isinstance(exc, Exception):
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            context_api.detach(self._token)
            span.end()

    def _outcome(self, exc: BaseException | None) -> str:
        if exc is None:
            return "succeeded"
        if not isinstance(exc, Exception):
            # Cancellation (asyncio's CancelledError, trio's Cancelled), or SystemExit and
            # KeyboardInterrupt reaching a task: stopped, not failed.
            return "cancelled"
        policy = self._task.policy
        if policy is not None and policy.retries_after(exc, self._attempt):
            return "retrying"
        return "failed"
