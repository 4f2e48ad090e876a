"""`attach`: run a collector's tasks after a response that was built without them.

A Starlette `Response` gets the tasks merged into its `background` (what it already carried runs
first, nothing is dropped), and watches its own sending: the attached tasks run only if its final
body message went out. Any other ASGI response or app is wrapped: the tasks run once it has
returned after sending its final body message. Either way they are logged by name, not run, if
the response raised or never finished (the client went away).

Why a Response watches itself: under ASGI spec < 2.4 (uvicorn announces 2.3), a `StreamingResponse`
stops streaming when the client disconnects and then returns normally, calling its `background`
as if the body had been sent. The background alone cannot tell; only the `send` can, and only
the response's `__call__` sees it. So `attach` gives the response a subclass of its own class
whose `__call__` wraps `send` and nothing else (`isinstance` checks and behaviour are unchanged).
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Sequence
from typing import TypeVar, cast, overload

from starlette.background import BackgroundTask as _StarletteTask
from starlette.background import BackgroundTasks as _StarletteTasks
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._report import entry_name, level_for, log_not_run
from ._tasks import BackgroundTasks

__all__ = ["attach"]

ResponseT = TypeVar("ResponseT", bound=Response)

# The messages after which an HTTP response is complete: the last body chunk, and the final
# message of the zero-copy-send and path-send ASGI extensions (which FileResponse may use).
_BODY_MESSAGES = frozenset({"http.response.body", "http.response.zerocopysend"})
_PATHSEND = "http.response.pathsend"


@overload
def attach(response: ResponseT, tasks: _StarletteTask) -> ResponseT: ...


@overload
def attach(response: ASGIApp, tasks: _StarletteTask) -> ASGIApp: ...


def attach(response: Response | ASGIApp, tasks: _StarletteTask) -> Response | ASGIApp:
    """Run `tasks` after `response` has been sent.

    A Starlette `Response` is changed in place and returned: its `background` becomes a
    collector running what it already had first, then `tasks`. Attaching the same tasks twice
    runs them once. The attached tasks run only if the final body message has gone out: if the
    client left mid-stream (a `StreamingResponse` under ASGI spec < 2.4 then returns normally) or
    sending raised, they are logged by name on the `afterward` logger instead; what the response
    carried before runs as Starlette would run it. For this the response's class becomes a
    subclass of its own that watches `send`. Since the response itself changes, attach only to a
    response made for this request, not to one shared between requests.

    Anything else is taken as an ASGI app or response (`async (scope, receive, send)`) and wrapped:
    the returned app calls it, then runs `tasks` if it returned normally after sending its final
    body message. If it raised, or returned without completing the response (the client went
    away), the tasks do not run and are logged by name on the `afterward` logger. For a
    websocket, the tasks run when the app returns normally. Like a response, the result is meant
    to be sent once: each task runs at most once however often it is called.

    Args:
        response: A Starlette `Response`, or any ASGI app or response.
        tasks: An `afterward.BackgroundTasks` collector or one `afterward.BackgroundTask`.
            Starlette's and FastAPI's `BackgroundTask`/`BackgroundTasks` are accepted too and
            get afterward's semantics (each of their tasks isolated from the others' errors).

    Returns:
        The same `response` if it is a Starlette `Response`, else an ASGI app wrapping it.

    Raises:
        TypeError: `tasks` is not a background task or collector, or `response` is neither a
            `Response` nor an ASGI app.
    """
    collector = _as_collector(tasks)
    if isinstance(response, Response):
        _attach_to_response(response, collector, tasks)
        return response
    app = response  # before the checks below narrow its type for mypy
    if isinstance(response, _StarletteTask):
        raise TypeError(
            f"attach() takes the response first and the tasks second, got {response!r} as the "
            f"response. Call attach(response, tasks)."
        )
    if inspect.isclass(response) and issubclass(response, Response):
        raise TypeError(
            f"attach() needs a response instance, got the class {response.__name__}. Pass "
            f"an instance: attach({response.__name__}(content), tasks)."
        )
    if not callable(response):
        raise TypeError(
            f"attach() needs a Starlette Response or an ASGI app `async (scope, receive, send)` "
            f"as its first argument, got {response!r}."
        )
    return _TasksAfterApp(app, collector)


class _AttachedTasks(BackgroundTasks):
    """A collector made by `attach`, remembering which objects it stands for."""

    def __init__(self, tasks: Sequence[_StarletteTask], sources: tuple[object, ...] = ()) -> None:
        super().__init__(tasks)
        # The objects this collector runs on behalf of, so attaching one of them again is a no-op
        # (a wrapper made for a Starlette collector has a cursor of its own and would run it
        # a second time otherwise).
        self.sources = sources or tuple(source for task in tasks for source in _sources_of(task))
        self.name = " + ".join(map(entry_name, tasks))


def _as_collector(tasks: object) -> BackgroundTasks:
    if isinstance(tasks, BackgroundTasks):
        return tasks
    if isinstance(tasks, _StarletteTasks):
        wrapper = _AttachedTasks([], sources=(tasks,))
        # Share the list, so that a task added to the Starlette collector after attach() still
        # runs instead of being dropped silently.
        wrapper.tasks = tasks.tasks
        wrapper.name = entry_name(tasks)
        return wrapper
    if isinstance(tasks, _StarletteTask):  # afterward's BackgroundTask too: it subclasses it
        return _AttachedTasks([tasks], sources=(tasks,))
    raise TypeError(
        f"attach() needs the tasks as an afterward.BackgroundTasks collector or a BackgroundTask "
        f"(Starlette's and FastAPI's are accepted too), got {tasks!r}. Pass the collector you "
        f"called add_task() on: attach(response, background_tasks)."
    )


def _as_entry(background: object) -> _StarletteTask:
    if isinstance(background, _StarletteTask):
        return _as_collector(background)
    # Not a BackgroundTask, but a response calls whatever it holds as `await background()`;
    # the runner does the same with an entry it does not know.
    return cast(_StarletteTask, background)


def _sources_of(background: object) -> tuple[object, ...]:
    if isinstance(background, _AttachedTasks):
        return background.sources
    return (background,)


def _carries(background: object, tasks: object) -> bool:
    return any(source is tasks for source in _sources_of(background))


def _attach_to_response(response: Response, collector: BackgroundTasks, tasks: object) -> None:
    existing = response.background
    if existing is not None and _carries(existing, tasks):
        return
    if isinstance(existing, _AfterSent):
        existing.attach(collector)
    else:
        own = None if existing is None else _as_entry(existing)
        response.background = _AfterSent(own, collector)
        # mypy cannot follow a class change; the new class is a subclass, nothing is lost.
        response.__class__ = _watching(type(response))


class _AfterSent(_AttachedTasks):
    """A response's background made by `attach`: its attached tasks run only if the body went out.

    `sent` is set by the response's watching `__call__` (see `_watching`); it stays True for a
    websocket denial response and for a response called by code that does not watch.
    """

    def __init__(self, own: _StarletteTask | None, collector: BackgroundTasks) -> None:
        super().__init__([collector] if own is None else [own, collector])
        self.own = own
        self.sent = True

    def attach(self, collector: BackgroundTasks) -> None:
        """Add `collector` after the collectors attached so far."""
        self.tasks.append(collector)
        self.sources += _sources_of(collector)
        self.name = " + ".join(map(entry_name, self.tasks))

    async def __call__(self) -> None:
        if self.sent:
            await super().__call__()
            return
        pending = self.skip_pending()
        self.log_not_run(
            [entry for entry in pending if entry is not self.own],
            "the response was not completed (the client went away)",
        )
        if self.own is not None and self.own in pending:
            # What the response carried before attach runs as Starlette would run it (often a
            # cleanup, such as closing what the stream read from).
            await BackgroundTasks([self.own])()

    def log_not_run(
        self, entries: Sequence[_StarletteTask], reason: str, level: int = logging.WARNING
    ) -> None:
        """Log the tasks of `entries` (collectors, mostly) that will not run, by their names."""
        tasks: list[_StarletteTask] = []
        for entry in entries:
            tasks.extend(entry.skip_pending() if isinstance(entry, BackgroundTasks) else [entry])
        log_not_run(BackgroundTasks(tasks), reason, level)


# Weak, so that a response class made at run time is not kept alive by having been attached to.
_watching_classes: weakref.WeakKeyDictionary[type[Response], type[Response]] = (
    weakref.WeakKeyDictionary()
)


def _watching(cls: type[Response]) -> type[Response]:
    """Return the subclass of `cls` that tells its `_AfterSent` whether the body went out."""
    if getattr(cls, "_afterward_watches", False):
        return cls
    watching = _watching_classes.get(cls)
    if watching is None:
        watching = _watching_classes[cls] = _make_watching(cls)
    return watching


def _make_watching(cls: type[Response]) -> type[Response]:
    async def __call__(self: Response, scope: Scope, receive: Receive, send: Send) -> None:
        guard = self.background
        if not isinstance(guard, _AfterSent) or scope["type"] != "http":
            await cls.__call__(self, scope, receive, send)
            return
        guard.sent = False

        async def send_and_watch(message: Message) -> None:
            await send(message)
            if _completes(message):
                guard.sent = True

        try:
            await cls.__call__(self, scope, receive, send_and_watch)
        except BaseException as exc:
            reason = f"the response raised {type(exc).__name__}"
            guard.log_not_run(guard.skip_pending(), reason, level_for(exc))
            raise

    namespace = {
        "__call__": __call__,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
        "__slots__": (),
        "_afterward_watches": True,
    }
    return type(cls.__name__, (cls,), namespace)


def _completes(message: Message) -> bool:
    """Return whether `message`, once sent, completes an HTTP response."""
    kind = message["type"]
    return kind == _PATHSEND or (kind in _BODY_MESSAGES and not message.get("more_body"))


class _TasksAfterApp:
    """An ASGI app that runs a collector after the app it wraps has completed its response."""

    __slots__ = ("app", "tasks")

    def __init__(self, app: ASGIApp, tasks: BackgroundTasks) -> None:
        self.app = app
        self.tasks = tasks

    def __repr__(self) -> str:
        return f"<attach {self.app!r} then {self.tasks!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        completed = scope["type"] != "http"

        async def send_and_watch(message: Message) -> None:
            nonlocal completed
            await send(message)
            # Only once the final message has been handed to the server: if sending it raised,
            # the response was not delivered.
            if _completes(message):
                completed = True

        try:
            await self.app(scope, receive, send_and_watch)
        except BaseException as exc:
            log_not_run(self.tasks, f"the response raised {type(exc).__name__}", level_for(exc))
            raise
        if not completed:
            log_not_run(self.tasks, "the response was not completed (the client went away)")
            return
        await self.tasks()
