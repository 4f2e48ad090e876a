"""`BackgroundTasksMiddleware`: background tasks for any ASGI app, run detached from requests.

For each HTTP request and websocket session the middleware opens one collector, which
`current_tasks()` returns anywhere below it. When the response has been completed, the collector
goes to the app's `Supervisor` and the request's ASGI call returns at once: outer middleware, the
access log and the server never wait for tasks. The supervisor lives as long as the app's lifespan:
the middleware starts it on `lifespan.startup`, before the app's own startup, and drains it on
`lifespan.shutdown`, before passing shutdown on, so tasks can still use the app's resources.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._backend import Backend, check_backend
from ._current import MIDDLEWARE_SLOT, NO_COLLECTOR, RequestSlot, request_slot
from ._handoff import bind_backend, serve_with_backend
from ._report import level_for, log_not_run, log_not_run_but_always, logger
from ._stats import Stats, supervisor_stats
from ._supervisor import Supervisor
from ._tasks import BackgroundTasks, new_collector

__all__ = ["BackgroundTasksMiddleware", "RunWhen"]

RunWhen = Literal["success", "completed", "always"]
"""When a request's tasks run: after a completed response below 400 (the default), after any
completed response, or always, even when the app raised or the client went away."""

AnyASGIApp = Callable[..., Awaitable[None]]
"""Any ASGI app: frameworks type `scope`, `receive` and `send` each their own way (Starlette,
Litestar, Quart, Django), and each app is called with the messages the server sends."""

_RUN_WHEN = ("success", "completed", "always")
_ZEROCOPY = "http.response.zerocopysend"  # completes a response like a final body message
_PATHSEND = "http.response.pathsend"  # always completes a response


class BackgroundTasksMiddleware:
    """Give every request a collector, and run its tasks after the response, detached.

    Args:
        app: The ASGI app to wrap.
        drain_timeout: At shutdown, seconds to wait for waiting and running tasks before the
            async ones are cancelled and every unfinished task is logged by name.
        max_running: How many requests' async tasks may run at once on the event loop.
        max_waiting: How many requests' task lists may wait for a running slot or a worker
            thread. When it is reached, handing off waits (the request's ASGI call returns
            later, so the server slows its clients down).
        handoff_timeout: Seconds a hand-off waits for room when `max_waiting` is reached; then
            the request's tasks are logged by name at ERROR as not run.
        workers: Worker threads for sync tasks: at most this many sync tasks run at once.
        run_when: `"success"` (default): run when the response was completed with a status
            below 400. `"completed"`: after any completed response. `"always"`: also when the
            app raised or the response was not completed. Tasks that do not run are logged by
            name at INFO (or WARNING when the app raised an unexpected exception), except
            those made with `afterward.task(..., always=True)`, which run whatever happened.
        collector: Makes each request's collector, e.g. `lambda: BackgroundTasks(on_error=report)`
            or a `BackgroundTasks` subclass.
        backend: Where the tasks run (see `afterward.Backend`, and the "Scaling out" page):
            None (the default) runs them in this process; a backend such as
            `afterward.celery.CeleryBackend` gets them, at the hand-off point it declares, and
            `handoff_timeout` bounds how long enqueueing may take.

    Raises:
        ValueError: an option is out of range.
    """

    def __init__(
        self,
        app: AnyASGIApp,
        *,
        drain_timeout: float = 30.0,
        max_running: int = 100,
        max_waiting: int = 10_000,
        handoff_timeout: float = 5.0,
        workers: int = 16,
        run_when: RunWhen = "success",
        collector: Callable[[], BackgroundTasks] = BackgroundTasks,
        backend: Backend | None = None,
    ) -> None:
        _check_count("max_running", max_running)
        _check_count("max_waiting", max_waiting)
        _check_count("workers", workers)
        _check_seconds("drain_timeout", drain_timeout)
        _check_seconds("handoff_timeout", handoff_timeout)
        if run_when not in _RUN_WHEN:
            raise ValueError(
                f"run_when must be one of 'success', 'completed' or 'always', got {run_when!r}."
            )
        if not callable(collector):
            raise TypeError(
                f"collector must be a callable that returns an afterward.BackgroundTasks, "
                f"such as the class itself, got {collector!r}."
            )
        if backend is not None:
            collector = bind_backend(collector, check_backend(backend))
        self.backend = backend
        self.app: ASGIApp = app
        self.drain_timeout = drain_timeout
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.handoff_timeout = handoff_timeout
        self.workers = workers
        self.run_when = run_when
        self.collector = collector
        # The class itself makes its collectors without `__init__`, as `inject` does.
        self._make_collector = new_collector if collector is BackgroundTasks else collector
        self.supervisor: Supervisor | None = None
        self._warned_inline = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The request path is inlined here, not a method of its own: one coroutine frame less
        # for every request.
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        if self.backend is not None:
            await serve_with_backend(self, self.backend, scope, receive, send)
            return
        # The request's state, made without an `__init__` call (a Python call per request): the
        # per-request fields are set here, the per-middleware ones are class attributes.
        state = _RequestState()
        state.factory = self._make_collector
        state.tasks = state._after = None
        state._send = send
        state.status = 0
        # A websocket session has no response to complete: its tasks run when the app returns.
        state.completed = kind == "websocket"
        scope[MIDDLEWARE_SLOT] = state
        token = request_slot.set(state)
        try:
            await self.app(scope, receive, state.send)
        except BaseException as exc:
            collector = state.tasks
            state.release()
            if collector is not None:
                if self.run_when == "always" and isinstance(exc, Exception):
                    await self._hand_off(collector)
                elif log_not_run_but_always(
                    collector, f"the app raised {type(exc).__name__}", level_for(exc)
                ):
                    await self._hand_off_failed(collector, exc)
            raise
        finally:
            request_slot.reset(token)
            # Let go of the server's `send` (its per-request object) as soon as the call ends:
            # held by the slot until the request's context is freed, it made uvicorn run the
            # garbage collector 20 to 30 times as often (measured with `gc.callbacks`).
            state._send = _send_after_return
        collector = state.tasks
        if collector is None:  # nothing was queued: the common case, without a call
            state._after = NO_COLLECTOR  # what `release()` leaves: a late `current_tasks()` raises
            return
        state.release()  # no reference cycle through the tasks' contexts (see `release`)
        if not collector.has_pending():
            return
        reason = self._reason_not_to_run(state)
        if reason is not None and not log_not_run_but_always(collector, reason, logging.INFO):
            return
        supervisor = self.supervisor
        # The common case, without a coroutine: there is room, the collector is queued at once.
        if supervisor is None or not supervisor.try_submit(collector):
            await self._hand_off(collector)

    def stats(self) -> Stats:
        """Return this middleware's task figures: how its requests' tasks ended, what runs now.

        The figures are those of the middleware's supervisor, which starts with the app (its
        lifespan startup): the outcomes of the tasks handed to it, run detached or not run (a
        full queue, `stop_on_error`, the drain deadline). Tasks not handed off at all (an error
        response, under `run_when="success"`) are counted by `afterward.stats()` only.
        `running` and `waiting` count requests, as `max_running` and `max_waiting` do. Before
        the app has started, every figure is zero.

        Returns:
            A frozen `afterward.Stats` snapshot.
        """
        return supervisor_stats(self.supervisor)

    def _reason_not_to_run(self, state: _RequestState) -> str | None:
        if self.run_when == "always":
            return None
        if not state.completed:
            return "the response was not completed (the client went away)"
        if self.run_when == "success" and state.status >= 400:
            return f"the response status was {state.status} (run_when='success' needs < 400)"
        return None

    async def _hand_off(self, collector: BackgroundTasks) -> None:
        supervisor = self.supervisor
        if supervisor is not None and supervisor.running:
            await supervisor.submit(collector)
            return
        if not self._warned_inline:
            self._warned_inline = True
            logger.warning(
                "BackgroundTasksMiddleware has no running supervisor, because the server sent no "
                "lifespan startup (or the app is shutting down): tasks run inline after each "
                "response, and the request's ASGI call waits for them. Run the server with "
                "lifespan enabled (uvicorn's default --lifespan auto does) to run them detached."
            )
        await collector()

    async def _hand_off_failed(self, collector: BackgroundTasks, exc: BaseException) -> None:
        """Hand off the `always=True` tasks of a request whose app raised `exc`."""
        if isinstance(exc, Exception):
            await self._hand_off(collector)
            return
        # A cancellation (or an exit): nothing may be awaited any more, only queued at once.
        supervisor = self.supervisor
        if supervisor is None or not supervisor.try_submit(collector):
            log_not_run(
                collector,
                f"the request was stopped by {type(exc).__name__} and the supervisor could not "
                f"take them at once",
                logging.WARNING,
            )

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        supervisor = Supervisor(
            max_running=self.max_running,
            max_waiting=self.max_waiting,
            workers=self.workers,
            drain_timeout=self.drain_timeout,
            handoff_timeout=self.handoff_timeout,
        )
        self.supervisor = supervisor
        lifespan = _Lifespan(
            supervisor, receive, send, lambda: _check_app(scope.get("app"), self.app)
        )
        async with supervisor.serving():
            try:
                await self.app(scope, lifespan.receive, lifespan.send)
            except BaseException:
                if lifespan.inner_received:
                    raise  # the app speaks lifespan and its startup or shutdown failed
                # The app does not speak lifespan (it raised before reading anything): answer the
                # server ourselves, so the supervisor still starts and drains.
                await lifespan.answer_alone()
                return
            if not lifespan.shutdown_sent:
                await lifespan.answer_alone()


async def _send_after_return(message: Message) -> None:
    raise RuntimeError(
        f"The app sent {message.get('type')!r} after its ASGI call had returned; a server "
        f"accepts no message then."
    )


class _RequestState(RequestSlot):
    """One request: its collector slot, and a watch on the response sent through `send`.

    One object per request: its bound `send` method is the `send` the app gets, so the request
    costs no closure, and the slot `current_tasks()` finds is the same object. The middleware sets
    its fields itself (see `__call__`): it has no `__init__` of its own to call.
    """

    __slots__ = ("_send", "completed", "status")

    __init__ = object.__init__
    owner = "BackgroundTasksMiddleware"
    detached = True

    _send: Send
    completed: bool
    status: int

    def send(self, message: Message) -> Awaitable[None]:
        # A plain function returning the server's own awaitable: no coroutine of ours per
        # message. The message is noted before it is sent; a send that raises fails the request
        # (the server's exception reaches `__call__` through the app), so a response whose end
        # was not sent counts as completed only if the app swallows that exception.
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
        elif kind == "http.response.body" or kind == _ZEROCOPY:
            if "more_body" not in message or not message["more_body"]:
                self.completed = True
        elif kind == _PATHSEND:
            self.completed = True
        elif kind == "websocket.http.response.start":  # a websocket denial response
            self.status = message["status"]
        return self._send(message)


class _Lifespan:
    """The middleware's side of one lifespan: drain before the app hears of shutdown."""

    def __init__(
        self, supervisor: Supervisor, receive: Receive, send: Send, check: Callable[[], None]
    ) -> None:
        self.supervisor = supervisor
        self._check = check
        self._receive = receive
        self._send = send
        self.inner_received = False
        self.startup_answered = False
        self.shutdown_sent = False

    async def receive(self) -> Message:
        self.inner_received = True
        message = await self._receive()
        if message["type"] == "lifespan.shutdown":
            await self.supervisor.drain()
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._check()
        if kind.startswith("lifespan.startup."):
            self.startup_answered = True
        elif kind.startswith("lifespan.shutdown."):
            self.shutdown_sent = True
        await self._send(message)

    async def answer_alone(self) -> None:
        """Speak the lifespan protocol for an app that does not."""
        if not self.startup_answered:
            if not self.inner_received:
                message = await self._receive()
                if message["type"] != "lifespan.startup":
                    raise RuntimeError(f"Expected lifespan.startup, got {message['type']!r}.")
            await self.send({"type": "lifespan.startup.complete"})
        while not self.shutdown_sent:
            message = await self._receive()
            if message["type"] == "lifespan.shutdown":
                await self.supervisor.drain()
                await self.send({"type": "lifespan.shutdown.complete"})


def _check_app(*candidates: object) -> None:
    """Run the startup checks that apply to the app (today: FastAPI's silent opt-out)."""
    fastapi = sys.modules.get("fastapi")
    if fastapi is None:
        return
    for app in candidates:
        if isinstance(app, fastapi.FastAPI):
            # The one place an entry point reaches up to an integration: only for a FastAPI app,
            # which has FastAPI imported already.
            from .fastapi import check_app

            check_app(app)
            return


def _check_count(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")


def _check_seconds(name: str, value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}.")
