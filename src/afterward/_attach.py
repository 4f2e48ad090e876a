"""`attach`: run a collector's tasks after a response that was built without them.

A Starlette `Response` gets the tasks merged into its `background` (what it already carried runs
first, nothing is dropped). Any other ASGI response or app is wrapped: the tasks run once it has
returned after sending its final body message, and are logged by name, not run, if it raised or
never finished the response.
"""

from __future__ import annotations

import inspect
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

    A Starlette `Response` is changed in place and returned: if it has no `background`, `tasks`
    becomes it; if it already has one, both run, its own first. Attaching the same tasks twice
    runs them once. Since the response itself changes, attach only to a response made for this
    request, not to one shared between requests.

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
        existing = response.background
        if existing is None:
            response.background = collector
        elif not _carries(existing, tasks):
            response.background = _AttachedTasks([_as_entry(existing), collector])
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
            kind = message["type"]
            if kind == _PATHSEND or (kind in _BODY_MESSAGES and not message.get("more_body")):
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
