"""The drop-in's dependencies: the collector factory, and the attachment to FastAPI's response.

Two dependencies per collector, so that replacing the collector cannot lose it:

- the factory (`get_background_tasks`, or the one given to `tasks_from`) only builds the
  collector. It is what users override, in tests or to set options;
- a private request-scoped `yield` dependency takes whatever the factory returned, checks it is an
  afterward collector, adds it to FastAPI's native collector (which FastAPI runs as the response's
  background), and at its exit runs what has not run yet or logs it when the request failed.

Tracing tools see each afterward task as one of FastAPI's tasks (see `afterward._tracing`), so
the native collector's entry for the whole collector must not be seen as a task of its own: it
would add a span, and put the tasks' spans one level below where FastAPI's own tasks have theirs.
`_attach` hides it from both kinds of hook.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

import fastapi
from fastapi import params
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from starlette.background import BackgroundTask as StarletteTask
from starlette.websockets import WebSocketDisconnect

import afterward
from afterward._callables import task_name
from afterward._current import RequestSlot, request_slot
from afterward._report import level_for, log_not_run, log_not_run_but_always
from afterward._tasks import seal, unseal

__all__ = ["get_background_tasks", "tasks_from"]

Factory = Callable[..., "afterward.BackgroundTasks | Awaitable[afterward.BackgroundTasks]"]


async def get_background_tasks() -> afterward.BackgroundTasks:
    """Build the request's collector: the factory behind `afterward.fastapi.BackgroundTasks`.

    FastAPI calls it once per request (it caches dependencies), so every parameter annotated
    `BackgroundTasks` in the path operation and its dependencies gets the same collector.
    Override it to configure or replace the collector; whatever the override returns is the one
    that runs after the response:

        app.dependency_overrides[get_background_tasks] = lambda: afterward.BackgroundTasks(
            on_error=report
        )

    The override must return an `afterward.BackgroundTasks` (or a subclass); anything else is
    a `TypeError` in the request.
    """
    return afterward.BackgroundTasks()


def tasks_from(factory: Factory) -> params.Depends:
    """Return the `Depends` marker that gives a parameter the collector `factory` builds.

    For options set once for an app, in production as well as in tests:

        def get_tasks() -> afterward.BackgroundTasks:
            return afterward.BackgroundTasks(on_error=report)

        BackgroundTasks = Annotated[afterward.BackgroundTasks, tasks_from(get_tasks)]

    The collector is attached to the response exactly as the plain drop-in's is.
    `factory` is a FastAPI dependency (it may itself declare dependencies, e.g. settings), so
    tests replace it with `app.dependency_overrides[get_tasks] = ...`. Parameters annotated with
    markers of one factory share one collector per request. Another factory (such as
    `get_background_tasks`, behind the plain `afterward.fastapi.BackgroundTasks` a library may
    use) gives a collector of its own, which runs before or after this one.

    Args:
        factory: A function, sync or async, returning an `afterward.BackgroundTasks`.

    Returns:
        A `fastapi.Depends(...)` marker, for `Annotated[afterward.BackgroundTasks, ...]`.

    Raises:
        TypeError: `factory` is not callable, or is a class (FastAPI would read the class's
            parameters as query parameters).
    """
    underlying = factory
    while isinstance(underlying, functools.partial):
        underlying = underlying.func
    if inspect.isclass(underlying):
        raise TypeError(
            f"tasks_from() needs a function that returns the collector, got the class "
            f"{underlying.__name__} (FastAPI would take its parameters as query parameters). "
            f"Write one: def get_tasks() -> afterward.BackgroundTasks: return "
            f"afterward.BackgroundTasks(on_error=report); then tasks_from(get_tasks)."
        )
    if not callable(factory):
        raise TypeError(
            f"tasks_from() needs a function that returns an afterward.BackgroundTasks, got "
            f"{factory!r}."
        )
    return params.Depends(_attaching(factory))


@functools.cache
def _attaching(factory: Factory) -> Callable[..., AsyncIterator[afterward.BackgroundTasks]]:
    """Return the request-scoped dependency that attaches `factory`'s collector to the response."""
    factory_name = task_name(factory)

    async def attach_to_response(
        native: fastapi.BackgroundTasks, tasks: object
    ) -> AsyncIterator[afterward.BackgroundTasks]:
        if not isinstance(tasks, afterward.BackgroundTasks):
            raise TypeError(
                f"The BackgroundTasks factory {factory_name} (or its override in "
                f"app.dependency_overrides) returned {tasks!r}, not an afterward collector, so "
                f"its tasks could not run. Return one, with the options you want: "
                f"lambda: afterward.BackgroundTasks(on_error=report)."
            )
        outer = request_slot.get(None)
        if isinstance(outer, RequestSlot) and outer.detached:
            # BackgroundTasksMiddleware runs this request's tasks, detached: the request has
            # its one collector (this one, unless code below the middleware opened it first).
            yield outer.adopt(tasks)
            return
        # FastAPI attaches `native` to the response it builds: our collector runs there, after
        # the body, like FastAPI's own tasks would.
        _attach(native, tasks)
        _hold(tasks)
        try:
            slot = RequestSlot(lambda: tasks, f"the FastAPI dependency {factory_name}")
            slot.tasks = tasks
            token = request_slot.set(slot)  # current_tasks() finds it, in threads too
            try:
                yield tasks
            except BaseException as exc:
                reason = f"the request failed with {type(exc).__name__}"
                if log_not_run_but_always(tasks, reason, _level_for_failure(exc)):
                    # The `always=True` tasks run now, before the error goes on to FastAPI.
                    if isinstance(exc, Exception):
                        await tasks()
                    else:
                        log_not_run(tasks, reason, _level_for_failure(exc))
                raise
            finally:
                request_slot.reset(token)
                slot.release()
            # Runs only what has not run yet: nothing, unless the path operation returned a
            # Response with its own `background` (FastAPI then drops `native`) or this is a
            # websocket route.
            await tasks()
        finally:
            _let_go(tasks)

    # The factory is a closure variable, which string annotations could not name: FastAPI reads
    # this signature instead.
    attach_to_response.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                "native", inspect.Parameter.KEYWORD_ONLY, annotation=fastapi.BackgroundTasks
            ),
            inspect.Parameter(
                "tasks",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[object, fastapi.Depends(factory)],
            ),
        ]
    )
    attach_to_response.__qualname__ = f"attach_to_response[{factory_name}]"
    return attach_to_response


def _hold(tasks: afterward.BackgroundTasks) -> None:
    """A request runs `tasks` after its response: it takes tasks until that run has ended."""
    # A factory override may hand one collector to several requests (a test keeping what was
    # queued): it takes tasks while any of them is open, and is sealed once none is.
    if tasks._holders == 0:
        unseal(tasks)
    tasks._holders += 1


def _let_go(tasks: afterward.BackgroundTasks) -> None:
    """The request's run of `tasks` has ended: refuse a late add_task unless another holds it."""
    tasks._holders -= 1
    if tasks._holders == 0:
        seal(tasks)


def _attach(native: fastapi.BackgroundTasks, tasks: afterward.BackgroundTasks) -> None:
    """Add `tasks` to FastAPI's collector as one entry that no tracing hook takes for a task.

    The entry's own `__call__` keeps it out of the wrapper that OpenTelemetry's FastAPI
    instrumentation (and logfire) put on Starlette's `BackgroundTask.__call__`. FastAPI's native
    telemetry opens a span around every entry of its collector, so this request's collector
    becomes a `_NativeTasks`, which runs our entry directly and each other entry as FastAPI
    does. afterward's runner then passes each of its tasks through those hooks itself.
    """
    native.tasks.append(_CollectorTask(tasks))
    # FastAPI builds exactly this class. Already a `_NativeTasks` when a second factory's
    # collector is attached; any other class keeps its own `__call__` (where FastAPI's telemetry
    # would give our entry a span, with the tasks' spans below it).
    if type(native) is fastapi.BackgroundTasks:
        native.__class__ = _NativeTasks


class _CollectorTask(StarletteTask):
    """The native collector's entry that runs an afterward collector (its `func`), spanless."""

    async def __call__(self) -> None:
        await self.func(*self.args, **self.kwargs)


class _NativeTasks(fastapi.BackgroundTasks):
    """FastAPI's collector of a request that uses the drop-in.

    FastAPI's `__call__` runs each entry in a telemetry operation (a span when its telemetry is
    on); this one runs afterward's entries without one, and every other entry through FastAPI's
    own `__call__`, one at a time, so those keep FastAPI's spans and semantics: the first failure
    stops the rest and reaches the server.
    """

    async def __call__(self) -> None:
        for task in self.tasks:  # a task may add one: the loop sees it, as Starlette's does
            if type(task) is _CollectorTask:
                await task()
            else:
                await fastapi.BackgroundTasks([task])()


def _level_for_failure(exc: BaseException) -> int:
    # A 422 is a deliberate answer, like an HTTPException, and a websocket client leaving is
    # routine: the tasks not running is the documented behaviour, not an incident.
    if isinstance(
        exc, (RequestValidationError, WebSocketRequestValidationError, WebSocketDisconnect)
    ):
        return logging.INFO
    return level_for(exc)
