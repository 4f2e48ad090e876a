"""`Backend`: where a request's tasks are executed, when it is not in this process.

With no backend (the default), a collector's tasks run here, after the response, on the event
loop and in afterward's worker threads. A backend takes them instead: it checks each task when it
is added (`validate`, in the request, so a mistake is a `TypeError` there) and receives the
request's tasks in one call (`enqueue`), for an engine such as Celery to execute elsewhere.

This module holds the interface and the one helper every entry point shares to hand tasks over:
`enqueue_entries`, which never raises and logs by name every task it could not hand over.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, cast

import anyio

from ._call import Call
from ._report import logger, names
from ._transitions import abandon

if TYPE_CHECKING:
    from ._task import BackgroundTask

__all__ = [
    "DEFAULT_ENQUEUE_TIMEOUT",
    "Backend",
    "HandOff",
    "PartlyQueued",
    "check_backend",
    "enqueue_entries",
    "take_pending",
]

HandOff = Literal["before_response", "after_response"]
"""When a request's tasks go to the backend: when the response starts (before its first byte
leaves, so a 2xx means "queued"), or after the response has been sent."""

HANDOFFS: tuple[HandOff, ...] = ("before_response", "after_response")

DEFAULT_ENQUEUE_TIMEOUT = 5.0
"""Seconds an `enqueue` may take when no middleware sets it (`handoff_timeout` there)."""


class Backend(abc.ABC):
    """Where tasks are executed: subclass it to send them to a task queue.

    A backend is selected with `BackgroundTasksMiddleware(app, backend=...)`, or
    `BackgroundTasks(backend=...)` for a collector used without the middleware. Without one
    (`backend=None`), tasks run in this process.

    The class-level flags say what the backend can do; `validate` refuses, in the request, a
    task that needs something it cannot do.

    Attributes:
        supports_async: Async functions can be sent (else they are refused at `add_task`).
        supports_results: The backend can report a task's outcome back to this process.
        supports_delay: Tasks can be scheduled to run later.
        supports_retries: A task's `retries` policy is honoured (else a task with retries is
            refused at `add_task`).
        handoff: `"before_response"`: the middleware enqueues the request's tasks when the
            response starts, before any byte of it is sent, and answers 503 instead if that
            fails, so a 2xx means "queued". `"after_response"`: it enqueues them after the
            response has been sent, detached from the request, and only logs a failure.
    """

    supports_async: ClassVar[bool] = True
    supports_results: ClassVar[bool] = False
    supports_delay: ClassVar[bool] = False
    supports_retries: ClassVar[bool] = False
    handoff: HandOff = "before_response"

    def validate(self, task: BackgroundTask) -> None:
        """Check, at `add_task`, that this backend can execute `task`; raise if not.

        The base class checks the capability flags. A subclass extends it (calling
        `super().validate(task)`) with what its engine needs, e.g. serializable arguments.

        Raises:
            TypeError: the backend cannot execute `task`; the message says what to do.
        """
        if task.is_async and not self.supports_async:
            raise TypeError(
                f"{task.name} is an async function, and {type(self).__name__} cannot run async "
                f"functions. Use a sync function, or a backend that supports async ones."
            )
        policy = getattr(task, "policy", None)
        if policy is not None and getattr(policy, "retries", 0) > 0 and not self.supports_retries:
            raise TypeError(
                f"{task.name} asks for retries, and {type(self).__name__} cannot retry tasks. "
                f"Remove retries= from its task(...) options, or use a backend that retries."
            )

    @abc.abstractmethod
    async def enqueue(self, tasks: Sequence[BackgroundTask]) -> None:
        """Hand `tasks` (one request's, in order) to the engine that will execute them.

        Return once they are safely handed over (durably queued, for a durable backend); raise
        if they are not. The caller bounds the time it takes, and logs by name the tasks not
        handed over.

        Raises:
            Exception: the tasks could not be handed over.
        """


def check_backend(backend: object) -> Backend:
    """Return `backend` if it is a `Backend`, else raise a `TypeError` saying what is expected."""
    if not isinstance(backend, Backend):
        raise TypeError(
            f"backend must be an afterward.Backend instance (such as "
            f"afterward.celery.CeleryBackend(celery_app)), or None to run tasks in this "
            f"process; got {backend!r}."
        )
    if backend.handoff not in HANDOFFS:
        raise ValueError(
            f"{type(backend).__name__}.handoff must be 'before_response' or 'after_response', "
            f"got {backend.handoff!r}."
        )
    return backend


class PartlyQueued(Exception):
    """Raised by a backend's `enqueue` when it failed after queueing the first tasks.

    Those are on the engine's side and will run; `enqueue_entries` names them apart from the
    ones that will not. The exception that stopped the hand-off is the `__cause__`.
    """

    def __init__(self, queued: Sequence[Call], cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.queued = list(queued)
        self.__cause__ = cause


class _Collector(Protocol):
    def take_next(self) -> object | None: ...


def take_pending(collector: _Collector) -> list[object]:
    """Take every entry of `collector` not started yet, to hand it to a backend.

    Unlike `skip_pending`, this does not mark them abandoned: they are about to be queued.
    """
    entries = []
    while (entry := collector.take_next()) is not None:
        entries.append(entry)
    return entries


async def enqueue_entries(
    backend: Backend, entries: Sequence[object], timeout: float = DEFAULT_ENQUEUE_TIMEOUT
) -> bool:
    """Hand `entries` to `backend` within `timeout` seconds; return whether that worked.

    Never raises (but for cancellation): a failure, or a hand-off that takes too long, is logged
    at ERROR with the names of the tasks that were not queued, and their handles get the status
    `"abandoned"`. Entries that are not afterward tasks (a Starlette `BackgroundTask` appended to
    `tasks` by hand) cannot be sent and are logged the same way. The handles of queued tasks stay
    `"pending"`: what becomes of them happens on the engine's side.
    """
    calls: list[BackgroundTask] = []
    others: list[object] = []
    for entry in entries:
        if isinstance(entry, Call):
            calls.append(cast("BackgroundTask", entry))  # every Call is a BackgroundTask
        else:
            others.append(entry)
    if others:
        logger.error(
            "Not queueing %d background task(s) on %s because they were not added with "
            "add_task (a backend only sends afterward tasks): %s.",
            len(others),
            type(backend).__name__,
            names(others),
        )
        abandon(others)
    if not calls:
        return not others
    failure: Exception | None = None
    try:
        with anyio.move_on_after(timeout) as scope:
            await backend.enqueue(calls)
    except Exception as exc:
        failure = exc
    if failure is None and not scope.cancelled_caught:
        return not others
    if isinstance(failure, PartlyQueued):
        queued = {id(task) for task in failure.queued}
        sent = [task for task in calls if id(task) in queued]
        calls = [task for task in calls if id(task) not in queued]
        logger.error(
            "Could not queue %d of %d background task(s) on %s (%s); they will not run: %s. "
            "Those queued before the failure will run: %s.",
            len(calls),
            len(calls) + len(sent),
            type(backend).__name__,
            failure,
            names(calls),
            names(sent),
            exc_info=failure.__cause__,
        )
        abandon(calls)
        return False
    logger.error(
        "Could not queue %d background task(s) on %s (%s); they will not run: %s.",
        len(calls),
        type(backend).__name__,
        f"it took more than {timeout:g} s"
        if failure is None
        else f"{type(failure).__name__}: {failure}",
        names(calls),
        exc_info=failure,
    )
    abandon(calls)
    return False
    return not others
