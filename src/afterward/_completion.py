"""What `inject`'s endpoint returns: a real `Response` that completes the request when sent.

For a plain return value it is a `JSONResponse` built directly (`json_response`). For a `Response`
the endpoint returned, when work remains, it is a copy of it (its class, status, headers, body)
extended (`complete`). Either, when Starlette sends it, sends itself, then runs the request's
tasks if the final body message went out, then closes the `yield` dependencies. A decorator around
the endpoint can read and change it as any response; what it changes is what is sent.

Teardown follows FastAPI: it is shielded from cancellation (a timeout middleware or a server
shutting down must not leave a database session open), and sync teardown runs on a limiter of its
own, so it cannot wait for a worker thread held by a sync endpoint that waits for the very
connection the teardown would return (the SQLAlchemy `get_db` deadlock, FastAPI #3205).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, AsyncExitStack
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from types import TracebackType
from typing import Any

from anyio import CancelScope, CapacityLimiter, to_thread
from starlette.background import BackgroundTask as _StarletteTask
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from ._attach import attach
from ._report import level_for, log_not_run
from ._runner import run_tasks
from ._tasks import BackgroundTasks, _SealedTasks, seal

__all__ = [
    "CompletingJSONResponse",
    "complete",
    "exit_sync_in_thread",
    "json_response",
    "tear_down",
]

# The messages after which an HTTP response is complete (ASGI, and its zero-copy-send and
# path-send extensions, which FileResponse may use).
_BODY_MESSAGES = frozenset({"http.response.body", "http.response.zerocopysend"})
_PATHSEND = "http.response.pathsend"


class _Completing(Response):
    """Mixed into the class of a response the endpoint returned (see `_completing_class`)."""

    # Set once per class: False where a normal return means the final body message went out.
    _afterward_watch: bool
    _afterward_collector: BackgroundTasks | None  # tasks added in teardown run too
    _afterward_first: _StarletteTask | None  # what runs right after the response
    _afterward_stack: AsyncExitStack | None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        completed = not self._afterward_watch
        if not completed:
            inner_send = send

            async def send(message: Message) -> None:
                nonlocal completed
                await inner_send(message)
                # Only once the server took the final message: a send that raised delivered nothing.
                kind = message["type"]
                if kind == _PATHSEND or (kind in _BODY_MESSAGES and not message.get("more_body")):
                    completed = True

        collector, stack = self._afterward_collector, self._afterward_stack
        try:
            try:
                await super().__call__(scope, receive, send)
                first = self._afterward_first
                if first is not None:
                    if completed:
                        await first()
                    else:
                        _skip(collector, "the response was not completed (the client went away)")
            except BaseException as exc:
                await _abandon(collector, stack, exc)
                raise
            if stack is not None:
                await _close(collector, stack, completed)
        finally:
            if collector is not None:
                seal(collector)  # nothing runs it again: a late add_task is refused


class CompletingJSONResponse(JSONResponse):
    """The `JSONResponse` `inject` sends for an endpoint's plain return value.

    It is built directly (`json_response`), without `JSONResponse.__init__`'s general path, and
    when sent it completes the request: runs its tasks, then closes its `yield` dependencies.
    Sending it is the two ASGI messages every `Response` sends, so the final body message has
    gone out when the second `send` returns: no `send` needs watching.
    """

    # Class-level defaults: a response per request sets only what differs (a decorator may still
    # set any of them on the instance, as on any response).
    status_code = 200
    background: _StarletteTask | None = None
    _afterward_collector: BackgroundTasks | None = None
    _afterward_stack: AsyncExitStack | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # as `Response` does
            send = self._wrap_websocket_denial_send(send)
        collector, stack = self._afterward_collector, self._afterward_stack
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            await send({"type": "http.response.body", "body": self.body})
            if self.background is not None:
                await self.background()
            # `collector.has_pending()`, written out.
            if collector is not None and collector._next < len(collector.tasks):
                if type(collector).__call__ is _COLLECTOR_CALL:
                    # What `collector()` does, without its frame: 0.15 µs (1% of a request),
                    # measured against the 0.04 µs this check costs.
                    await run_tasks(collector)
                else:
                    await collector()  # a subclass's own `__call__`
        except BaseException as exc:
            await _abandon(collector, stack, exc)
            if collector is not None:
                seal(collector)
            raise
        if stack is not None:
            await _close(collector, stack, True)
        if collector is not None:
            # `seal(collector)`, written out (nothing runs it again: a late add_task is refused).
            collector.tasks = _SealedTasks(collector.tasks)


def _make_encode() -> Callable[[Any], str]:
    """Return what `JSONResponse.render` does, but for `.encode()`, at a third of its cost.

    `json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))` builds a
    `JSONEncoder`, a closure and a C encoder on every call (~1.4 µs for a small dict); one C
    encoder made once does the same work in ~0.45 µs, 6% of an `inject` request. Same output,
    same `TypeError`/`ValueError`s, except that without the per-call dictionary of containers
    being encoded, a circular structure is found by the recursion limit (`RecursionError`)
    instead of "Circular reference detected" (`ValueError`).
    """
    stock = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    if c_make_encoder is None:  # pragma: no cover - CPython always has the C encoder
        return stock.encode
    # The arguments `JSONEncoder.iterencode` passes (CPython 3.10 to 3.13), but no markers.
    encoder = c_make_encoder(
        None, stock.default, encode_basestring, None, ":", ",", False, False, False
    )

    def encode(content: Any) -> str:
        return "".join(encoder(content, 0))

    return encode


_encode = _make_encode()
_COLLECTOR_CALL = BackgroundTasks.__call__
_CONTENT_TYPE = (b"content-type", b"application/json")
_new = object.__new__


def json_response(
    content: Any,
    collector: BackgroundTasks | None,
    stack: AsyncExitStack | None,
    status_code: int = 200,
) -> CompletingJSONResponse:
    """Return the `JSONResponse` of `content` that runs `collector`, then closes `stack`, once sent.

    The same response (body, headers, status) as `JSONResponse(content, status_code)` for a status
    that has a body.

    Raises:
        TypeError, ValueError, RecursionError: `content` cannot be sent as JSON.
    """
    response: CompletingJSONResponse = _new(CompletingJSONResponse)
    body = response.body = _encode(content).encode()
    response.raw_headers = [(b"content-length", str(len(body)).encode()), _CONTENT_TYPE]
    # Each attribute its `__call__` reads is written here, even to its class's default: reading
    # a default through the instance misses CPython 3.11's specialised attribute lookup (~160
    # instructions each, callgrind), writing it costs ~25.
    response.status_code = status_code
    response.background = None
    response._afterward_collector = collector
    response._afterward_stack = stack
    return response


async def _abandon(
    collector: BackgroundTasks | None, stack: AsyncExitStack | None, exc: BaseException
) -> None:
    """Sending the response raised: log the tasks as not run, close the dependencies."""
    reason = f"sending the response raised {type(exc).__name__}"
    _skip(collector, reason, level_for(exc))
    if stack is not None:
        await tear_down(stack, exc)
        _skip(collector, reason, level_for(exc))  # those added by the teardown


async def _close(collector: BackgroundTasks | None, stack: AsyncExitStack, completed: bool) -> None:
    """Close the dependencies; then run the tasks their teardown added."""
    await tear_down(stack, None)
    if collector is not None and collector.has_pending():
        # Added by a dependency's teardown, after its `yield`: as the FastAPI drop-in does, they
        # run (once the response is complete).
        if completed:
            await collector()
        else:
            _skip(collector, "the response was not completed (the client went away)")


def _skip(collector: BackgroundTasks | None, reason: str, level: int = logging.WARNING) -> None:
    if collector is not None:
        log_not_run(collector, reason, level)


_classes: dict[type[Response], type[_Completing]] = {}
_MAX_CLASSES = 64  # bounded: a program may make response classes on the fly


def _completing_class(cls: type[Response]) -> type[_Completing]:
    completing = _classes.get(cls)
    if completing is None:
        if len(_classes) >= _MAX_CLASSES:
            _classes.clear()
        # A plain `Response` sends its final body message and returns; other classes (streaming,
        # files) may return without having sent it when the client leaves.
        watch = cls.__call__ is not Response.__call__
        completing = _classes[cls] = type(
            cls.__name__,
            (_Completing, cls),
            {"__module__": cls.__module__, "__slots__": (), "_afterward_watch": watch},
        )
    return completing


def complete(
    response: Response, collector: BackgroundTasks | None, stack: AsyncExitStack | None
) -> Response:
    """Return a copy of `response` that runs `collector`'s tasks, then closes `stack`, once sent.

    A copy, because the endpoint returned `response` and may share it between requests; the
    copy's headers are its own, so a decorator setting one does not change the original.

    Args:
        response: The response the endpoint returned.
        collector: The request's collector, if one was made.
        stack: The `yield` dependencies to close, if any were entered.
    """
    result = _new(_completing_class(type(response)))
    state = result.__dict__
    state.update(response.__dict__)
    state.pop("_headers", None)
    state["raw_headers"] = list(response.raw_headers)
    first: _StarletteTask | None = None
    if collector is not None and collector.has_pending():
        first = collector
        if result.background is not None:
            # Both run, its own first, each task isolated from the others' errors; both only once
            # the response is complete.
            first = attach(result, collector).background
            result.background = None
    result._afterward_collector = collector
    result._afterward_first = first
    result._afterward_stack = stack
    return result


async def tear_down(stack: AsyncExitStack, exc: BaseException | None) -> None:
    """Close the `yield` dependencies, shielded from cancellation (as FastAPI does)."""
    with CancelScope(shield=True):
        if exc is None:
            await stack.aclose()
        else:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)


def exit_sync_in_thread(stack: AsyncExitStack, manager: AbstractContextManager[Any]) -> None:
    """Have `stack` close a sync `yield` dependency in a thread that no endpoint can hold."""

    async def exit_in_thread(
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        # A limiter of its own (FastAPI does the same): AnyIO's default one may be exhausted by
        # sync endpoints waiting for what this teardown releases.
        return await to_thread.run_sync(
            manager.__exit__, exc_type, exc, traceback, limiter=CapacityLimiter(1)
        )

    stack.push_async_exit(exit_in_thread)
