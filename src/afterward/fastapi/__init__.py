"""FastAPI drop-in: `from afterward.fastapi import BackgroundTasks`.

Replace `from fastapi import BackgroundTasks` with this import and change nothing else: path
operations and dependencies that declare `background_tasks: BackgroundTasks` get one
`afterward.BackgroundTasks` collector per request (the same object in every dependency and
sub-dependency), and its tasks get afterward's semantics (isolated errors, own worker threads,
one thread hop per run of sync tasks, the `contextvars` of the place they were added).

How it works: a parameter annotated with a subclass of Starlette's `BackgroundTasks` makes FastAPI
inject its own `fastapi.BackgroundTasks()`, so this `BackgroundTasks` is not a class but the alias
`Annotated[afterward.BackgroundTasks, Depends(get_background_tasks)]`. The dependency asks FastAPI
for its native collector and adds ours to it as one task, so ours runs exactly where FastAPI's
would, after the response has been sent. It is a request-scoped `yield` dependency, whose exit
FastAPI (>= 0.118) runs after the response and its background:

- the path operation returned a `Response` with its own `background` (FastAPI then drops the
  injected tasks): that background runs first, then ours, at this dependency's exit. They run
  after the teardown of `yield` dependencies set up after this one, and recent FastAPI versions
  shield dependency teardown from cancellation; to run them inside the response instead, return
  `afterward.attach(response, background_tasks)`;
- the path operation or a dependency raised (including `HTTPException` and validation errors):
  the tasks do not run, as in FastAPI, and are logged by name on the `afterward` logger;
- websocket routes (where FastAPI ignores background tasks): the tasks run when the handler
  returns normally, and are logged as not run if it raises (an uncaught `WebSocketDisconnect`
  included).

`BackgroundTasks()` still builds a collector by hand (calling the alias calls the class), but
`isinstance` needs the class: `isinstance(obj, afterward.BackgroundTasks)`. To replace the
collector in tests, override the dependency: `app.dependency_overrides[get_background_tasks]`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, TypeAlias

try:
    import fastapi
except ImportError as exc:
    raise ImportError(
        f"afterward.fastapi needs FastAPI, which could not be imported ({exc}). Install it with "
        f"pip install 'afterward[fastapi]'."
    ) from exc

from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from starlette.websockets import WebSocketDisconnect

import afterward
from afterward._report import level_for, log_not_run

__all__ = ["BackgroundTasks", "get_background_tasks"]


async def get_background_tasks(
    native: fastapi.BackgroundTasks,
) -> AsyncIterator[afterward.BackgroundTasks]:
    """Provide the request's `afterward.BackgroundTasks` collector (a FastAPI dependency).

    FastAPI caches it per request, so every parameter annotated `BackgroundTasks` in the path
    operation and its dependencies gets the same collector.
    """
    tasks = afterward.BackgroundTasks()
    # FastAPI attaches `native` to the response it builds: our collector runs there, after the
    # body, like FastAPI's own tasks would.
    native.add_task(tasks)
    try:
        yield tasks
    except BaseException as exc:
        reason = f"the request failed with {type(exc).__name__}"
        log_not_run(tasks, reason, _level_for_failure(exc))
        raise
    # Runs only what has not run yet: nothing, unless the path operation returned a Response with
    # its own `background` (FastAPI then drops `native`) or this is a websocket route.
    await tasks()


def _level_for_failure(exc: BaseException) -> int:
    # A 422 is a deliberate answer, like an HTTPException, and a websocket client leaving is
    # routine: the tasks not running is the documented behaviour, not an incident.
    if isinstance(
        exc, (RequestValidationError, WebSocketRequestValidationError, WebSocketDisconnect)
    ):
        return logging.INFO
    return level_for(exc)


BackgroundTasks: TypeAlias = Annotated[
    afterward.BackgroundTasks, fastapi.Depends(get_background_tasks)
]
"""The request's afterward collector, for parameters of path operations and dependencies."""
