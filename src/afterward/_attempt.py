"""One entry run attempt by attempt: its policy, the attempt scopes and the events.

The runner's fast paths (a run of sync entries in one thread hop, an async entry's first step
taken at once) only write the handle's few attributes. An entry goes through here instead when it
has a policy (`afterward.task`), overrides `__call__`, or when event callbacks or attempt scopes
are registered:

- each attempt runs in a fresh copy of the entry's captured context, with every attempt scope
  entered inside that context around it (in the worker thread, for a sync function);
- an async attempt is limited to `policy.timeout` seconds: it is cancelled and fails with
  `TimeoutError`;
- a failure that `policy.retry_on` covers, with retries left, is logged at WARNING with its
  attempt number, then the next attempt starts after the backoff. The wait is an `anyio.sleep`
  on the event loop: a sync entry's thread is only taken for the attempts themselves.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from contextvars import Context
from typing import TYPE_CHECKING, Any

import anyio

from . import _hop as hop
from ._call import Call
from ._events import count, emit, listeners, scopes
from ._limiter import task_hop_limiter
from ._report import logger, task_extra
from ._steps import await_in_context
from ._transitions import cancel, fail, start, succeed

if TYPE_CHECKING:
    from anyio import CapacityLimiter

__all__ = ["run_attempts"]

# Runs an entry that overrides `__call__` in a context: the runner's `_run_override`.
RunOverride = Callable[[Call, "CapacityLimiter | None", Context], Awaitable[None]]
_DONE: Any = object()


async def run_attempts(
    entry: Call,
    limiter: CapacityLimiter | None,
    run_override: RunOverride,
    context: Context | None = None,
    *,
    on_cancel: Callable[[], object] | None = None,
) -> None:
    """Run `entry` to its end, attempt after attempt as its policy says; raise its last failure.

    The entry's status, attempts, timings and exception are kept up to date, the outcome is
    counted and the events are emitted. Cancellation marks it cancelled and goes on.

    Args:
        entry: The entry.
        limiter: The collector's limiter, for the thread of a sync attempt.
        run_override: How to run an entry that overrides `__call__`.
        context: The context to copy for each attempt; the entry's captured one unless given
            (a tracing hook gives the captured one with its span laid over).
        on_cancel: Called on the loop if a cancellation arrives while a sync attempt runs in
            its worker thread, the moment it arrives (see `_hop.run_sync`).
    """
    policy = entry.policy
    base = entry.context if context is None else context
    attempt = 0
    while True:
        attempt += 1
        started = time.time()
        start(entry, attempt, started)
        if listeners:
            emit("started", entry, attempt)
        try:
            await _attempt(entry, attempt, base.copy(), limiter, run_override, on_cancel)
        except Exception as exc:
            if policy is None or not policy.retries_after(exc, attempt):
                fail(entry, exc, attempt, started)
                raise
            delay = policy.delay(attempt)
            _retrying(entry, exc, attempt, started, delay)
            await anyio.sleep(delay)
        except BaseException as exc:
            cancel(entry, exc, attempt, started)
            raise
        else:
            succeed(entry, attempt, started)
            return


def _retrying(entry: Call, exc: Exception, attempt: int, started: float, delay: float) -> None:
    duration = time.time() - started
    entry.exception = exc
    count("retried")
    logger.warning(
        "Background task %s failed on attempt %d of %d (%s: %s); retrying in %.3g s.",
        entry.name,
        attempt,
        entry.policy.retries + 1 if entry.policy is not None else attempt,
        type(exc).__name__,
        exc,
        delay,
        extra=task_extra(entry, "retrying", attempt, duration),
    )
    if listeners:
        emit("retrying", entry, attempt, duration, exc)


async def _attempt(
    entry: Call,
    attempt: int,
    context: Context,
    limiter: CapacityLimiter | None,
    run_override: RunOverride,
    on_cancel: Callable[[], object] | None,
) -> None:
    if not entry.runs_directly:
        await _on_loop(entry, attempt, context, run_override(entry, limiter, context))
    elif entry.is_async:
        await _on_loop(entry, attempt, context, _async_call(entry, context))
    else:
        result, entered = await hop.run_sync(
            _sync_attempt,
            entry,
            attempt,
            context,
            limiter=task_hop_limiter(limiter),
            on_cancel=None if on_cancel is None else lambda *_: on_cancel(),
        )
        if entered is not None:
            # A sync wrapper returned an awaitable: it is part of the attempt, and so inside
            # the scopes entered in the thread (an OpenTelemetry span ends once it is done).
            work = await_in_context(context, result)  # type: ignore[arg-type]
            await _on_loop(entry, attempt, context, work, entered=entered)


async def _on_loop(
    entry: Call,
    attempt: int,
    context: Context,
    work: Awaitable[None],
    *,
    entered: tuple[AbstractContextManager[Any], ...] | None = None,
) -> None:
    """Await `work` within the timeout, inside the attempt scopes (entered in `context`).

    `entered`: the scopes already entered for this attempt (in its worker thread), else None.
    """
    timeout = entry.policy.timeout if entry.policy is not None and entry.is_async else None
    if entered is None:
        entered = context.run(_enter, entry, attempt) if scopes else ()
    try:
        if timeout is None:
            await work
        else:
            with anyio.fail_after(timeout):
                await work
    except BaseException:
        context.run(_exit, entered, sys.exc_info())
        raise
    context.run(_exit, entered, (None, None, None))


async def _async_call(entry: Call, context: Context) -> None:
    await await_in_context(context, entry.func(*entry.args, **entry.kwargs))


_Scopes = tuple[AbstractContextManager[Any], ...]


def _sync_attempt(entry: Call, attempt: int, context: Context) -> tuple[object, _Scopes | None]:
    """In the worker thread: the attempt scopes entered, the function called, in `context`.

    Returns:
        What the function returned, and, if that is an awaitable, the scopes still entered:
        they are exited on the loop once the awaitable is done. (A tuple: trio's
        `to_thread.run_sync` refuses a function that returns a coroutine.)
    """
    return context.run(_call_in_scopes, entry, attempt)


def _call_in_scopes(entry: Call, attempt: int) -> tuple[object, _Scopes | None]:
    entered = _enter(entry, attempt) if scopes else ()
    try:
        result = entry.func(*entry.args, **entry.kwargs)
    except BaseException:
        _exit(entered, sys.exc_info())
        raise
    if result is not None and inspect.isawaitable(result):
        return result, entered
    _exit(entered, (None, None, None))
    return result, None


def _enter(entry: Call, attempt: int) -> tuple[AbstractContextManager[Any], ...]:
    entered: list[AbstractContextManager[Any]] = []
    for factory in tuple(scopes):
        try:
            manager = factory(entry, attempt)
            manager.__enter__()
        except Exception:
            logger.exception("An afterward attempt scope (%r) failed to enter.", factory)
            continue
        entered.append(manager)
    return tuple(entered)


def _exit(entered: tuple[AbstractContextManager[Any], ...], info: Any) -> None:
    for manager in reversed(entered):
        try:
            manager.__exit__(*info)
        except Exception:
            logger.exception("An afterward attempt scope (%r) failed to exit.", manager)
