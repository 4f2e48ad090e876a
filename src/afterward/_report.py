"""How afterward names tasks in its logs, and how it logs tasks that will never run.

Shared by the runner and by every entry point (`inject`, `attach`, the FastAPI drop-in), so that a
task not run is reported the same way wherever the decision is taken. It sits below all of them and
imports none of them: a collector is anything with a `skip_pending()` method.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from starlette.exceptions import HTTPException

from ._callables import task_name

__all__ = [
    "entry_name",
    "level_for",
    "log_not_run",
    "log_not_run_but_always",
    "logger",
    "names",
    "task_extra",
]

logger = logging.getLogger("afterward")


class _Skippable(Protocol):
    def skip_pending(self) -> Sequence[object]: ...


class _KeepsAlways(Protocol):
    def skip_pending(self, *, keep_always: bool = ...) -> Sequence[object]: ...
    def has_pending(self) -> bool: ...


def task_extra(
    task: object, outcome: str | None, attempt: int | None, duration: float | None
) -> dict[str, Any]:
    """Return the `extra` of a log record about one task, for structured logging.

    Keys: `afterward_task` (its name), `afterward_task_id`, `afterward_attempt`,
    `afterward_outcome` and `afterward_duration` (seconds of the attempt), None where unknown.
    """
    task_id = getattr(task, "id", None)
    return {
        "afterward_task": entry_name(task),
        "afterward_task_id": task_id if isinstance(task_id, str) else None,
        "afterward_attempt": attempt,
        "afterward_outcome": outcome,
        "afterward_duration": duration,
    }


def entry_name(task: object) -> str:
    """Return the name of a collector entry: its `name` if it has one, else its function's."""
    name = getattr(task, "name", None)
    if isinstance(name, str):
        return name
    return task_name(getattr(task, "func", task))


def names(tasks: Iterable[object]) -> str:
    """Return the entries' names, comma-separated, for a log line."""
    return ", ".join(map(entry_name, tasks))


def log_not_run(tasks: _Skippable, reason: str, level: int = logging.WARNING) -> None:
    """Log, by name, the tasks of `tasks` that have not run and now never will; mark them done."""
    pending = tasks.skip_pending()
    if pending:
        logger.log(
            level,
            "Not running %d background task(s) because %s: %s.",
            len(pending),
            reason,
            names(pending),
        )


def log_not_run_but_always(tasks: _KeepsAlways, reason: str, level: int) -> bool:
    """For a failed request: log the tasks not run, by name, but keep those with `always=True`.

    Returns:
        Whether tasks remain to run (the `always` ones), which the caller then runs.
    """
    pending = tasks.skip_pending(keep_always=True)
    remain = tasks.has_pending()
    if pending:
        logger.log(
            level,
            "Not running %d background task(s) because %s: %s%s.",
            len(pending),
            reason,
            names(pending),
            " (the always=True ones still run)" if remain else "",
        )
    return remain


def level_for(exc: BaseException) -> int:
    """Return the level for tasks not run because of `exc`: INFO for an HTTPException."""
    # An HTTPException is a deliberate answer (404, 403...): its tasks not running is the
    # documented behaviour, not an incident.
    return logging.INFO if isinstance(exc, HTTPException) else logging.WARNING
