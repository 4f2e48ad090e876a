"""What `inject`'s endpoint returns when work remains after the response: a real `Response`.

It is the endpoint's response (its class, status, headers, body), extended to do three things when
Starlette sends it: send it, then run the request's tasks if the final body message went out,
then close the `yield` dependencies. A decorator around the endpoint can read and change it as
any response; what it changes is what is sent.

Teardown follows FastAPI: it is shielded from cancellation (a timeout middleware or a server
shutting down must not leave a database session open), and sync teardown runs on a limiter of its
own, so it cannot wait for a worker thread held by a sync endpoint that waits for the very
connection the teardown would return (the SQLAlchemy `get_db` deadlock, FastAPI #3205).
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, AsyncExitStack
from types import TracebackType
from typing import Any, TypeVar

from anyio import CancelScope, CapacityLimiter, to_thread
from starlette.background import BackgroundTask as _StarletteTask
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ._attach import attach
from ._report import level_for, log_not_run
from ._tasks import BackgroundTasks

__all__ = ["complete", "exit_sync_in_thread", "tear_down"]

ResponseT = TypeVar("ResponseT", bound=Response)

# The messages after which an HTTP response is complete (ASGI, and its zero-copy-send and
# path-send extensions, which FileResponse may use).
_BODY_MESSAGES = frozenset({"http.response.body", "http.response.zerocopysend"})
_PATHSEND = "http.response.pathsend"


class _Remaining:
    """The work that remains once the response is sent."""

    __slots__ = ("collector", "first", "stack")

    def __init__(
        self,
        collector: BackgroundTasks | None,
        first: _StarletteTask | None,
        stack: AsyncExitStack | None,
    ) -> None:
        self.collector = collector  # the request's collector: tasks added in teardown run too
        self.first = first  # what runs right after the response: the collector, or a merge
        self.stack = stack


class _Completing(Response):
    """Mixed into the class of the endpoint's response (see `_completing_class`)."""

    _afterward_remaining: _Remaining
    _afterward_watch: bool  # False where a normal return means the final body message went out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        remaining = self._afterward_remaining
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

        collector, stack = remaining.collector, remaining.stack
        try:
            await super().__call__(scope, receive, send)
            if remaining.first is not None:
                if completed:
                    await remaining.first()
                else:
                    _skip(collector, "the response was not completed (the client went away)")
        except BaseException as exc:
            reason = f"sending the response raised {type(exc).__name__}"
            _skip(collector, reason, level_for(exc))
            if stack is not None:
                await tear_down(stack, exc)
                _skip(collector, reason, level_for(exc))  # those added by the teardown
            raise
        if stack is not None:
            await tear_down(stack, None)
            if collector is not None and collector.has_pending():
                # Added by a dependency's teardown, after its `yield`: as the FastAPI drop-in does,
                # they run (once the response is complete).
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
        completing = _classes[cls] = type(
            cls.__name__, (_Completing, cls), {"__module__": cls.__module__, "__slots__": ()}
        )
    return completing


def complete(
    response: Response,
    collector: BackgroundTasks | None,
    stack: AsyncExitStack | None,
    *,
    owned: bool,
) -> Response:
    """Return `response` extended to run `collector`'s tasks, then close `stack`, once sent.

    Args:
        response: The endpoint's response.
        collector: The request's collector, if one was made.
        stack: The `yield` dependencies to close, if any were entered.
        owned: `response` was made by `inject` for this request, so it may be changed in place;
            otherwise (the endpoint returned it, maybe a shared one) a copy is returned.
    """
    cls = type(response)
    result = object.__new__(_completing_class(cls))
    if owned:
        result.__dict__ = response.__dict__  # nobody else holds `response`: no copy needed
    else:
        state = result.__dict__
        state.update(response.__dict__)
        # The copy's headers are its own: a decorator setting one must not change a shared original.
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
    result._afterward_remaining = _Remaining(collector, first, stack)
    # A plain `Response` sends its final body message and returns; other classes (streaming,
    # files) may return without having sent it when the client leaves.
    result._afterward_watch = cls.__call__ is not Response.__call__
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
