"""How the runner reports a task that failed, and a run that was interrupted.

A failure is logged by name at ERROR with its traceback and the task's fields in `extra`, then
`on_error` is called and `stop_on_error` applied, from any thread (a worker thread reports a
failure of a sync task where it happened). An interrupted run names the task it interrupted and
every task it never started; their handles say `"cancelled"` and `"abandoned"`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING

from ._call import Call
from ._report import entry_name, logger, names, task_extra
from ._transitions import abandon, cancel

if TYPE_CHECKING:
    from ._collector import Collector

__all__ = [
    "abandoned_in_thread",
    "log_abandoned",
    "log_abandoned_in_thread",
    "log_failure",
    "log_interrupted",
    "report_failure",
    "report_failure_now",
]


async def report_failure(collector: Collector, entry: object, exc: Exception) -> None:
    pending = report_failure_now(collector, entry, exc)
    if pending is not None:
        try:
            await pending
        except Exception:
            logger.exception("The on_error callback failed while handling %s.", entry_name(entry))


def report_failure_now(
    collector: Collector, entry: object, exc: Exception
) -> Awaitable[object] | None:
    """Log a failed entry, call `on_error`, apply `stop_on_error`; in any thread.

    Returns:
        What `on_error` returned if it must still be awaited (an async `on_error`), else None.
    """
    name = entry_name(entry)
    log_failure(entry, exc, stop_on_error=collector.stop_on_error)
    pending: Awaitable[object] | None = None
    if collector.on_error is not None:
        try:
            result = collector.on_error(entry, exc)
            if inspect.isawaitable(result):
                pending = result
        except Exception:
            logger.exception("The on_error callback failed while handling %s.", name)
    if collector.stop_on_error:
        skipped = collector.skip_pending()
        if skipped:
            logger.error(
                "Skipping %d background task(s) because %s failed and stop_on_error is set: %s.",
                len(skipped),
                name,
                names(skipped),
            )
    return pending


def log_failure(entry: object, exc: Exception, *, stop_on_error: bool) -> None:
    attempts = entry.attempts if isinstance(entry, Call) else None
    logger.error(
        "Background task %s failed%s; %s.",
        entry_name(entry),
        f" after {attempts} attempts" if attempts is not None and attempts > 1 else "",
        "the remaining tasks are skipped (stop_on_error)"
        if stop_on_error
        else "the remaining tasks still run",
        exc_info=(type(exc), exc, exc.__traceback__),
        extra=task_extra(
            entry, "failed", attempts, entry._duration if isinstance(entry, Call) else None
        ),
    )


def log_abandoned(
    collector: Collector, running: object, waiting: object, exc: BaseException
) -> None:
    never_started = collector.skip_pending()
    if isinstance(running, Call):
        cancel(running, exc, running.attempts, running.started_at)
    if waiting is not None:
        abandon((waiting,))
        never_started = [waiting, *never_started]
    if running is None and not never_started:
        return
    log_interrupted(entry_name(running) if running is not None else None, exc, never_started)


abandoned_in_thread: set[Collector] = set()
"""Collectors whose run `log_abandoned_in_thread` stopped: the runner, which awaits the hop
that called it, takes each out again (and raises the cancellation). A plain set, not a
`WeakSet`: the runner checks it after every thread hop, and a `WeakSet`'s truth is a Python call.
"""


def log_abandoned_in_thread(collector: Collector, first: object) -> None:
    """The host task is cancelled while a run of sync entries goes on in its worker thread.

    Called on the event loop the moment the cancellation arrives (see `_hop.run_sync`): the
    hop still waits for the thread, and a server shutting down may exit first. The run stops
    before its next entry (the thread checks for the cancellation between entries); this names
    the entry the thread is running, which no one can stop, and marks and names those after it.
    """
    abandoned_in_thread.add(collector)
    never_started = collector.skip_pending()
    current = collector.started_before(len(never_started))
    if not (isinstance(current, Call) and current.status == "running"):
        current = None  # the thread is between two entries: it stops before the next one
    logger.warning(
        "Background tasks stopped by a cancellation: %s; %d task(s) never started: %s.",
        f"{entry_name(current)} is still running in its worker thread and is abandoned as it "
        f"is (threads cannot be cancelled)"
        if current is not None
        else "none was running",
        len(never_started),
        names(never_started) or "none",
        extra=task_extra(current, "abandoned", current.attempts, None)
        if current is not None
        else None,
    )


def log_interrupted(
    running: str | None, exc: BaseException, never_started: Sequence[object]
) -> None:
    logger.warning(
        "Background tasks stopped by %s: %s; %d task(s) never started: %s.",
        type(exc).__name__,
        f"{running} was interrupted" if running is not None else "none was running",
        len(never_started),
        names(never_started) or "none",
    )
