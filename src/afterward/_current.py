"""`current_tasks()`: the collector of the request being handled, from anywhere inside it."""

from __future__ import annotations

from contextvars import ContextVar

from ._tasks import BackgroundTasks

__all__ = ["current_tasks", "request_tasks"]

request_tasks: ContextVar[BackgroundTasks] = ContextVar("afterward.request_tasks")
"""The request's collector; set by whoever opens it (the middleware, `inject`, the FastAPI alias)."""


def current_tasks() -> BackgroundTasks:
    """Return the background-task collector of the request being handled.

    It works anywhere below `afterward.BackgroundTasksMiddleware`: in the endpoint, a dependency,
    an inner middleware, a plain helper function, a sync function running in a worker thread. It
    is the same collector that `inject` and `afterward.fastapi.BackgroundTasks` hand out, so a
    request has exactly one, whichever way code reaches it.

    Returns:
        The request's `afterward.BackgroundTasks`.

    Raises:
        LookupError: called outside a request handled by the middleware, `inject` or the FastAPI
            integration.
    """
    try:
        return request_tasks.get()
    except LookupError:
        raise LookupError(
            "current_tasks() was called outside a request, so there is no collector to return. "
            "Wrap the app with afterward.BackgroundTasksMiddleware (app = "
            "BackgroundTasksMiddleware(app), or Middleware(BackgroundTasksMiddleware) in Starlette "
            "and FastAPI), or call it from an endpoint made with afterward.inject or one that "
            "takes afterward.fastapi.BackgroundTasks."
        ) from None
