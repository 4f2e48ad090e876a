"""The middleware's request path when a `Backend` is configured: hand the tasks to it.

With `handoff="before_response"` (what durable backends use), the request's tasks are enqueued
when the app sends `http.response.start`, before that message is passed on: the client sees a
2xx only once its tasks are queued. If enqueueing fails or takes longer than the middleware's
`handoff_timeout`, the client gets a 503 instead of the app's response, and the tasks are logged
by name at ERROR. Tasks added after the response has started (a streaming response) are enqueued
when the app returns, and a failure then can only be logged.

With `handoff="after_response"`, the tasks are enqueued once the response has been sent, detached
from the request through the middleware's supervisor (like in-process tasks), so the server does
not wait; a failure is logged.

The default path (no backend) never comes here: `BackgroundTasksMiddleware.__call__` branches once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

from starlette.types import Message, Receive, Scope, Send

from ._backend import Backend, enqueue_entries, take_pending
from ._current import MIDDLEWARE_SLOT, RequestSlot, request_slot
from ._report import level_for, log_not_run, log_not_run_but_always, names
from ._tasks import BackgroundTask, BackgroundTasks

__all__ = ["bind_backend", "serve_with_backend"]

_FINAL_BODY = frozenset({"http.response.body", "http.response.zerocopysend"})
_PATHSEND = "http.response.pathsend"
_UNAVAILABLE = b"Service Unavailable: the background work of this request could not be queued.\n"


class _Middleware(Protocol):
    """What this module needs of `BackgroundTasksMiddleware`."""

    app: Callable[..., Awaitable[None]]
    backend: Backend | None
    collector: Callable[[], BackgroundTasks]

    @property
    def run_when(self) -> str: ...

    handoff_timeout: float

    async def _hand_off(self, collector: BackgroundTasks) -> None: ...


def bind_backend(
    factory: Callable[[], BackgroundTasks], backend: Backend
) -> Callable[[], BackgroundTasks]:
    """Wrap a collector factory so that each collector it makes sends its tasks to `backend`."""

    def make() -> BackgroundTasks:
        tasks = factory()
        if isinstance(tasks, BackgroundTasks) and tasks.backend is None:
            tasks.use_backend(backend)
        return tasks  # a wrong type is reported by the request slot, as without a backend

    return make


async def serve_with_backend(
    middleware: _Middleware, backend: Backend, scope: Scope, receive: Receive, send: Send
) -> None:
    """Handle one HTTP request or websocket session whose tasks go to `backend`."""
    state = _BackendRequest(middleware, backend, send, scope["type"] == "websocket")
    timeout = middleware.handoff_timeout
    scope[MIDDLEWARE_SLOT] = state
    token = request_slot.set(state)
    try:
        await middleware.app(scope, receive, state.send)
    except BaseException as exc:
        collector = state.tasks
        state.release()
        # Too late for a 503 (the server answers the exception): failures are only logged.
        if collector is not None and _runs_after_raising(middleware, collector, exc):
            await enqueue_entries(backend, take_pending(collector), timeout)
        raise
    finally:
        request_slot.reset(token)
    collector = state.tasks
    state.release()
    if collector is None or not collector.has_pending():
        return
    if state.refused:
        log_not_run(collector, "the response was replaced by a 503", logging.ERROR)
        return
    reason = state.reason_not_to_run()
    if reason is not None and not log_not_run_but_always(collector, reason, logging.INFO):
        return
    if backend.handoff == "before_response":
        # Added after the response started, or kept by `always=True` after a failed request:
        # too late to refuse the response, so a failure is only logged.
        await enqueue_entries(backend, take_pending(collector), timeout)
    else:
        await middleware._hand_off(_carrier(backend, collector, timeout))


def _runs_after_raising(
    middleware: _Middleware, collector: BackgroundTasks, exc: BaseException
) -> bool:
    """Whether tasks of a request whose app raised `exc` still go (logging those that do not)."""
    if not collector.has_pending():
        return False
    if middleware.run_when == "always" and isinstance(exc, Exception):
        return True
    return log_not_run_but_always(collector, f"the app raised {type(exc).__name__}", level_for(exc))


def _carrier(backend: Backend, collector: BackgroundTasks, timeout: float) -> BackgroundTasks:
    """A collector whose one async task enqueues `collector`'s tasks (run by the supervisor)."""
    entries = take_pending(collector)
    carrier = BackgroundTasks()
    carrier.add_task(enqueue_entries, backend, entries, timeout)
    entry = cast(BackgroundTask, carrier.tasks[0])
    entry.name = f"queueing of {names(entries)}"  # what a log line names if it never runs
    return carrier


class _BackendRequest(RequestSlot):
    """One request: its collector slot, and the watch on `send` that hands the tasks over."""

    __slots__ = ("_backend", "_middleware", "_send", "completed", "refused", "status")

    def __init__(
        self, middleware: _Middleware, backend: Backend, send: Send, websocket: bool
    ) -> None:
        super().__init__(middleware.collector, "BackgroundTasksMiddleware", detached=True)
        self._middleware = middleware
        self._backend = backend
        self._send = send
        self.status = 0
        self.completed = websocket  # a websocket session has no response to complete
        self.refused = False  # a 503 replaced the app's response

    def reason_not_to_run(self) -> str | None:
        """Why the request's tasks must not run, by the middleware's `run_when`; None if none."""
        run_when = self._middleware.run_when
        if run_when == "always":
            return None
        if not self.completed:
            return "the response was not completed (the client went away)"
        if run_when == "success" and self.status >= 400:
            return f"the response status was {self.status} (run_when='success' needs < 400)"
        return None

    async def send(self, message: Message) -> None:
        if self.refused:
            return  # the app's own response was replaced: drop the rest of it
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            if self._backend.handoff == "before_response" and not await self._enqueue_now():
                self.refused = True
                self.status = 503
                await self._send_unavailable()
                return
        elif (kind in _FINAL_BODY and not message.get("more_body")) or kind == _PATHSEND:
            self.completed = True
        elif kind == "websocket.http.response.start":
            self.status = message["status"]
        await self._send(message)

    async def _enqueue_now(self) -> bool:
        """Enqueue the tasks added so far, if the response's status lets them run."""
        tasks = self.tasks
        if tasks is None or not tasks.has_pending():
            return True
        middleware = self._middleware
        if middleware.run_when == "success" and self.status >= 400:
            # They do not run; their `always=True` ones are enqueued when the request ends,
            # where the reason (this status, or an exception) is known and logged.
            return True
        return await enqueue_entries(self._backend, take_pending(tasks), middleware.handoff_timeout)

    async def _send_unavailable(self) -> None:
        await self._send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(_UNAVAILABLE)).encode()),
                    (b"retry-after", b"5"),
                ],
            }
        )
        await self._send({"type": "http.response.body", "body": _UNAVAILABLE})
        self.completed = True
