"""`current_tasks()`: the collector of the request being handled, from anywhere inside it.

Whoever handles a request (the middleware, an `inject` endpoint, the FastAPI dependency) puts a
`RequestSlot` in a context variable. The collector in it is made on first use, so a request that
queues nothing pays for no collector. Code running in a worker thread sees the same slot (the
thread gets a copy of the context, and the copy holds the same object), so a collector opened
there is the request's one too.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextvars import ContextVar
from typing import Protocol

from ._tasks import BackgroundTasks

__all__ = [
    "MIDDLEWARE_SLOT",
    "NO_COLLECTOR",
    "RequestSlot",
    "Slot",
    "current_tasks",
    "request_slot",
]


class Slot(Protocol):
    """Where a request's collector is found: `RequestSlot`, or `inject`'s per-request state."""

    def open(self) -> BackgroundTasks:
        """Return the request's collector, making it if nobody has asked yet."""


class RequestSlot:
    """The request's collector, made by `factory` the first time someone asks for it.

    Attributes:
        detached: The middleware runs this request's tasks (after the response, in its
            supervisor); the FastAPI dependency then hands out this collector and leaves
            running it to the middleware. (`inject` finds such a slot in the ASGI scope, under
            `MIDDLEWARE_SLOT`.)
    """

    __slots__ = ("_after", "detached", "factory", "owner", "tasks")

    def __init__(
        self, factory: Callable[[], BackgroundTasks], owner: str, *, detached: bool = False
    ) -> None:
        self.factory = factory
        self.owner = owner  # who runs the tasks: named in error messages
        self.detached = detached
        self.tasks: BackgroundTasks | None = None
        self._after: Callable[[], BackgroundTasks | None] | None = None

    def open(self) -> BackgroundTasks:
        """Return the request's collector, making it now if nobody has asked yet.

        Raises:
            RuntimeError: the request is over and its collector is gone (see `release`).
        """
        tasks = self.tasks
        if tasks is None:
            if self._after is not None:
                return collector_after_release(self._after)
            tasks = self.factory()
            if not isinstance(tasks, BackgroundTasks):
                raise TypeError(
                    f"The collector factory of {self.owner} returned {tasks!r}; it must return "
                    f"an afterward.BackgroundTasks (or a subclass)."
                )
            self.tasks = tasks
        return tasks

    def release(self) -> None:
        """The request is over: keep the collector only weakly from now on.

        Each task's captured context holds this slot, and the collector holds its tasks: a
        strong reference here would make every request with a task a reference cycle, left for
        the garbage collector (measured: 15 % of a request's time). Whoever runs the tasks holds
        the collector meanwhile, so `current_tasks()` inside a running task still finds it.
        """
        tasks = self.tasks
        self._after = NO_COLLECTOR if tasks is None else weakref.ref(tasks)
        self.tasks = None

    def adopt(self, tasks: BackgroundTasks) -> BackgroundTasks:
        """Make `tasks` the request's collector, unless someone opened one already; return it."""
        if self.tasks is None:
            self.tasks = tasks
        return self.tasks


def collector_after_release(after: Callable[[], BackgroundTasks | None]) -> BackgroundTasks:
    """Return a released slot's collector while someone still runs it, else raise."""
    tasks = after()
    if tasks is None:
        raise RuntimeError(
            "This request is over and its background tasks have run (or it had none), so a "
            "task added now would never run. Add tasks while the request is being handled, or "
            "from one of its tasks while they run; for later work, use a collector of its own."
        )
    return tasks


def _no_collector() -> None:
    return None


NO_COLLECTOR: Callable[[], BackgroundTasks | None] = _no_collector
"""What a slot released without a collector keeps (the collector itself, weakly, else)."""

request_slot: ContextVar[Slot] = ContextVar("afterward.request_slot")

MIDDLEWARE_SLOT = "afterward.middleware_slot"
"""The ASGI scope key under which `BackgroundTasksMiddleware` leaves the slot of the request it
runs the tasks of. `inject` reads it there (a dictionary lookup) instead of setting a slot of its
own and resetting it once it finds the middleware's (a context variable's `set` and `reset`,
about 0.7 µs)."""


def current_tasks() -> BackgroundTasks:
    """Return the background-task collector of the request being handled.

    It works anywhere below `afterward.BackgroundTasksMiddleware`: in the endpoint, a dependency,
    an inner middleware, a plain helper function, a sync function running in a worker thread. It
    also works inside `inject` endpoints and FastAPI path operations that use
    `afterward.fastapi.BackgroundTasks`, with or without the middleware. It is the same collector
    those hand out as a parameter, so a request has exactly one, whichever way code reaches it.

    Returns:
        The request's `afterward.BackgroundTasks`.

    Raises:
        LookupError: called outside a request handled by the middleware, `inject` or the FastAPI
            integration.
    """
    try:
        slot = request_slot.get()
    except LookupError:
        raise LookupError(
            "current_tasks() was called outside a request, so there is no collector to return. "
            "Wrap the app with afterward.BackgroundTasksMiddleware (app = "
            "BackgroundTasksMiddleware(app), or Middleware(BackgroundTasksMiddleware) in "
            "Starlette and FastAPI), or call it from an endpoint made with afterward.inject or "
            "one that takes afterward.fastapi.BackgroundTasks."
        ) from None
    return slot.open()
