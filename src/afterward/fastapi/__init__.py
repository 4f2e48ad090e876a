"""FastAPI drop-in: `from afterward.fastapi import BackgroundTasks`.

Replace `from fastapi import BackgroundTasks` with this import and change nothing else: path
operations and dependencies that declare `background_tasks: BackgroundTasks` get one
`afterward.BackgroundTasks` collector per request (the same object in every dependency and
sub-dependency), and its tasks get afterward's semantics (isolated errors, own worker threads,
one thread hop per run of sync tasks, the `contextvars` of the place they were added).

How it works: a parameter annotated with a subclass of Starlette's `BackgroundTasks` makes FastAPI
inject its own `fastapi.BackgroundTasks()`, so this `BackgroundTasks` is not a class but the alias
`Annotated[afterward.BackgroundTasks, Depends(...)]`. The collector comes from the factory
`get_background_tasks` (override it to set options or replace the collector); a private
request-scoped `yield` dependency adds it to FastAPI's native collector as one task, so it runs
exactly where FastAPI's would, after the response has been sent, and at its exit runs whatever
did not run there:

- the path operation returned a `Response` with its own `background` (FastAPI then drops the
  injected tasks): that background runs first, then ours, at this dependency's exit. To run them
  inside the response instead, return `afterward.attach(response, background_tasks)`;
- the path operation or a dependency raised (including `HTTPException` and validation errors):
  the tasks do not run, as in FastAPI, and are logged by name on the `afterward` logger;
- websocket routes (where FastAPI ignores background tasks): the tasks run when the handler
  returns normally, and are logged as not run if it raises.

`check_app(app)` finds the parameters annotated with `afterward.BackgroundTasks` itself, where
FastAPI silently injects its own collector. The whole story is in docs/fastapi.md.
"""

from __future__ import annotations

try:
    import fastapi as _fastapi  # noqa: F401  (imported first, for the message below)
except ImportError as exc:
    raise ImportError(
        f"afterward.fastapi needs FastAPI, which could not be imported ({exc}). Install it with "
        f"pip install 'afterward[fastapi]'."
    ) from exc

from typing import Annotated, TypeAlias

import afterward

from ._check import OptOut as OptOut
from ._check import OptOutWarning as OptOutWarning
from ._check import check_app as check_app
from ._dependency import get_background_tasks as get_background_tasks
from ._dependency import tasks_from as tasks_from

__all__ = [
    "BackgroundTasks",
    "OptOut",
    "OptOutWarning",
    "check_app",
    "get_background_tasks",
    "tasks_from",
]

BackgroundTasks: TypeAlias = Annotated[afterward.BackgroundTasks, tasks_from(get_background_tasks)]
"""The request's afterward collector, for parameters of path operations and dependencies."""
