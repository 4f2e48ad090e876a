"""The Runner: executes one collector's tasks after the response.

Order is the order of `add_task`. A run of consecutive sync tasks is a single
`anyio.to_thread.run_sync` call on afterward's limiter (one thread hop instead of one per task);
async tasks are awaited on the event loop. Each task runs in a copy of the context captured when
it was added. A task that raises is logged and reported, and the next one runs. Cancellation is
never swallowed: the tasks it prevents are logged by name before it propagates.

Each afterward entry is its own handle: the fast paths write its status and times;
an entry with a policy, one that overrides `__call__`, and every entry while event callbacks or
attempt scopes are registered, is run attempt by attempt by `_attempt.run_attempts` instead
(without batching). A collector made with `concurrency=N` runs up to N entries at once, each on
its own.

The runner imports nothing of the public classes. It knows afterward's entries by their base
class `Call`, and uses the collector only through the `Collector` protocol below.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from contextvars import Context, ContextVar, copy_context
from time import time as _now
from typing import TYPE_CHECKING, cast

import anyio
from anyio import from_thread
from anyio.lowlevel import checkpoint

from . import _hop as hop
from . import _recording as recording
from ._attempt import run_attempts
from ._call import Call
from ._collector import Collector as Collector
from ._events import listeners, scopes, succeeded_counter
from ._failures import (
    abandoned_in_thread,
    log_abandoned,
    log_abandoned_in_thread,
    log_failure,
    log_interrupted,
    report_failure,
)
from ._limiter import task_hop_limiter
from ._report import logger, names
from ._steps import DONE, await_in_context, resume
from ._tracing import TraceHook, active_hook, run_through_hook
from ._transitions import fail, succeed

if TYPE_CHECKING:
    from anyio import CapacityLimiter

__all__ = [
    "Collector",
    "is_batchable",
    "run_call",
    "run_sync_batch",
    "run_task",
    "run_tasks",
    "settle_sync_stop",
    "take_following",
]


# What stopped a run of sync entries: the entry (None for cancellation), its context, the outcome.
_SyncStop = tuple["Call | None", Context, object]

# Set, inside the context an overriding `__call__` runs in, to the entry it runs for and the
# collector's limiter: `super().__call__()` there runs the function itself (see `run_task`).
_override: ContextVar[tuple[Call, CapacityLimiter | None] | None] = ContextVar(
    "afterward_override", default=None
)


async def run_tasks(collector: Collector, *, until_sync: bool = False) -> None:
    """Run the collector's tasks that have not been started yet, in order.

    With `until_sync`, return before the next sync task that can be run directly: the supervisor
    hands those to its worker threads. A collector with `concurrency` above 1 runs all its
    entries here, up to that many at once.
    """
    if recording.recorder is not None and not until_sync and recording.intercept(collector):
        return  # afterward.testing.record_tasks() is on: recorded, not run
    if collector.concurrency != 1:
        await _run_concurrently(collector)
        return
    running: object = None  # the entry being run, named in the log if the run is interrupted
    waiting: object = None  # a sync entry taken, waiting for its thread: not started yet
    hook = active_hook()
    # A tracing hook, event callbacks or attempt scopes: no entry takes the fast paths below.
    general = hook is not None or bool(listeners or scopes)
    stop_before_sync = until_sync and not general
    clock: float | None = None  # when the task before ended, if the loop went straight on
    try:
        while True:
            if stop_before_sync and is_batchable(collector.next_pending()):
                return
            # `collector.take_next()`, written out: a method call per task cost ~400
            # instructions (callgrind).
            index = collector._next
            entries = collector.tasks
            if index >= len(entries):
                return
            collector._next = index + 1
            entry = entries[index]
            running = entry
            if general or not isinstance(entry, Call) or not entry._plain:
                clock = None
                await _run_general(collector, hook, entry)
            elif entry.is_async:
                # Now "running" (see `TaskHandle.status`). Straight after a task of this path
                # ended, nothing ran in between: its end is this one's start (one clock read
                # less per task: ~45 ns, timeit; 1 % of a request with ten tasks), unless this
                # one was added after that (by another thread).
                if clock is not None and clock >= entry.queued_at:
                    entry.started_at = started = clock
                else:
                    entry.started_at = started = _now()
                clock = None
                # Its first step, written out here: most short tasks finish in it, and a helper
                # function's call cost ~600 instructions per task (callgrind). The step runs in a
                # copy of the captured context; calling an async function runs none of its code.
                # `f(*args, **kwargs)` would copy `kwargs` on every call, and most tasks have
                # none. `next(iterator, DONE)` is `iterator.send(None)`, but a coroutine that
                # finishes returns `DONE` instead of raising StopIteration (timeit, a task that
                # does not suspend: 275 ns instead of 435 ns; a direct `await`: 220 ns).
                try:
                    context = entry.context.copy()
                    kwargs = entry.kwargs
                    call = entry.func(*entry.args, **kwargs) if kwargs else entry.func(*entry.args)
                    iterator = call.__await__()
                    yielded = context.run(next, iterator, DONE)
                    if yielded is not DONE:
                        await resume(context, iterator, yielded)
                except Exception as exc:
                    fail(entry, exc, 1, started)
                    await report_failure(collector, entry, exc)
                else:
                    # `succeed()`, written out: no callback or scope to serve on this path.
                    entry.finished_at = clock = _now()  # now "succeeded"
                    next(succeeded_counter)
                    if entry._waiter is not None:
                        entry._waiter.wake()
            else:
                clock = None
                running, waiting = None, entry
                stopped = await hop.run_sync(
                    run_sync_batch,
                    collector,
                    entry,
                    limiter=task_hop_limiter(collector.limiter),
                    on_cancel=log_abandoned_in_thread,
                )
                waiting = None
                if stopped is not None:
                    running = stopped[0]
                    await settle_sync_stop(collector, *stopped)
            running = None
            if abandoned_in_thread and collector in abandoned_in_thread:
                # Cancelled while a thread ran, and named then (`log_abandoned_in_thread`):
                # stop here, as the cancellation stops the thread before a next task.
                abandoned_in_thread.discard(collector)
                await checkpoint()
    except BaseException as exc:
        if abandoned_in_thread:
            abandoned_in_thread.discard(collector)
        log_abandoned(collector, running, waiting, exc)
        raise


async def run_task(entry: Call) -> None:
    """Run an entry outside of a collector: what `afterward.BackgroundTask.__call__` does.

    Called by the runner for an overriding `__call__` (as `super().__call__()`), it runs the
    function in the context the override runs in, under the collector's limiter, and raises what
    the function raises: the override sees it (a retry wrapper can retry, a tracer can record
    it), and the runner reports it. Called any other way (a lone task as a response's
    `background=`), a failure is logged, not raised.
    """
    current = _override.get()
    if current is not None and current[0] is entry:
        await run_call(entry, copy_context(), current[1])
        return
    if recording.recorder is not None and recording.intercept_task(entry):
        return  # afterward.testing.record_tasks() is on: recorded, not run
    try:
        if entry.runs_directly:
            await run_attempts(entry, None, _run_override)
        else:  # an override awaited by Starlette itself, calling `super().__call__()`
            await run_call(entry, entry.context.copy(), None)
    except Exception as exc:
        log_failure(entry, exc, stop_on_error=False)
    except BaseException as exc:
        log_interrupted(entry.name, exc, ())
        raise


async def run_call(entry: Call, context: Context, limiter: CapacityLimiter | None) -> None:
    """Run one entry's function to its end in `context`, raising what it raises.

    This is where a single entry is invoked; a run of sync entries in a collector is invoked
    entry by entry in `run_sync_batch`, in one worker thread.
    """
    if entry.is_async:
        await await_in_context(context, entry.func(*entry.args, **entry.kwargs))
        return
    (result,) = await hop.run_sync(
        _call_sync_boxed, entry, context, limiter=task_hop_limiter(limiter)
    )
    if result is not None and inspect.isawaitable(result):
        await await_in_context(context, result)


def is_batchable(entry: object) -> bool:
    """Whether `entry` is a plain sync afterward task, which a run of sync entries may take."""
    return isinstance(entry, Call) and entry._plain and not entry.is_async


async def _run_managed(collector: Collector, entry: Call) -> None:
    """Run one entry attempt by attempt (see `_attempt`); report its final failure."""
    try:
        await run_attempts(
            entry,
            collector.limiter,
            _run_override,
            on_cancel=functools.partial(log_abandoned_in_thread, collector, entry),
        )
    except Exception as exc:
        await report_failure(collector, entry, exc)


async def _run_awaitable_entry(collector: Collector, entry: object) -> None:
    """Await `entry()`, for an entry that is not an afterward task; report its failure."""
    try:
        # Anything else Starlette accepts as a task (its own BackgroundTask or BackgroundTasks,
        # another awaitable callable): run it as it runs itself.
        await entry()  # type: ignore[operator]
    except Exception as exc:
        await report_failure(collector, entry, exc)


async def _run_override(entry: Call, limiter: CapacityLimiter | None, context: Context) -> None:
    # The override runs in (a copy of) the entry's captured context, so whatever it makes
    # current there (a span, say) is current for the function that `super().__call__()` runs.
    context.run(_override.set, (entry, limiter))
    await await_in_context(context, entry())  # type: ignore[operator]


async def _run_concurrently(collector: Collector) -> None:
    """Run the collector's entries up to `collector.concurrency` at once, each on its own."""
    running: list[object] = []
    hook = active_hook()
    try:
        async with anyio.create_task_group() as group:
            for _ in range(collector.concurrency):
                group.start_soon(_lane, collector, hook, running)
    except BaseException as exc:
        never_started = collector.skip_pending()
        if running or never_started:
            logger.warning(
                "Background tasks stopped by %s: %s interrupted; %d task(s) never started: %s.",
                type(exc).__name__,
                names(running) or "none",
                len(never_started),
                names(never_started) or "none",
            )
        raise


async def _lane(collector: Collector, hook: TraceHook | None, running: list[object]) -> None:
    """One of the `concurrency` lanes: take the next entry and run it, until none is left."""
    while (entry := collector.take_next()) is not None:
        running.append(entry)
        try:
            if hook is not None:
                await _run_traced(collector, hook, entry)
            elif isinstance(entry, Call):
                await _run_managed(collector, entry)
            else:
                await _run_awaitable_entry(collector, entry)
        finally:
            running.remove(entry)


async def _run_general(collector: Collector, hook: TraceHook | None, entry: object) -> None:
    """Run one entry that the runner's fast paths do not take."""
    if hook is not None:
        await _run_traced(collector, hook, entry)
    elif not isinstance(entry, Call):
        await _run_awaitable_entry(collector, entry)
    else:  # a policy, event callbacks or attempt scopes, or an overriding `__call__`
        await _run_managed(collector, entry)


async def _run_traced(collector: Collector, hook: TraceHook, entry: object) -> None:
    """Run one entry through a tracing tool's hook on the frameworks' task running.

    With a hook in place (see `_tracing`), every entry goes through it on its own, without
    batching, so that each gets its span; an afterward entry is then run by `_execute`.
    """
    limiter = collector.limiter

    async def execute(entry: Call, context: Context) -> None:
        await run_attempts(entry, limiter, _run_override, context)

    try:
        await run_through_hook(hook, entry, execute if isinstance(entry, Call) else None)
    except Exception as exc:
        await report_failure(collector, entry, exc)


async def settle_sync_stop(
    collector: Collector, entry: Call | None, context: Context, outcome: object
) -> None:
    """Deal with what stopped a run of sync entries (see `run_sync_batch`) on the loop."""
    if entry is not None and isinstance(outcome, Exception):
        await report_failure(collector, entry, outcome)
        return
    if isinstance(outcome, BaseException):
        raise outcome  # the caller names `entry` as interrupted: it is what was running
    # A sync function returned an awaitable (a sync wrapper around an async function): await it
    # on the loop, in the context the function ran in, instead of dropping it un-awaited.
    started = entry.started_at if entry is not None and entry.started_at is not None else 0.0
    try:
        await await_in_context(context, cast("Awaitable[object]", outcome))
    except Exception as exc:
        if entry is not None:
            fail(entry, exc, 1, started)
        await report_failure(collector, entry, exc)
    else:
        if entry is not None:
            succeed(entry, 1, started)


def run_sync_batch(
    collector: Collector,
    entry: Call,
    take: Callable[[Collector], Call | None] | None = None,
) -> _SyncStop | None:
    """Run `entry` and the consecutive sync entries after it, in this worker thread.

    Stops at a failure, at an awaitable returned, at the first entry that is not a sync one, or
    when `take` raises (AnyIO's threads: the host task was cancelled; the supervisor's: the
    drain deadline passed).

    Args:
        collector: The collector the entries come from.
        entry: The first entry, already taken.
        take: Takes the following entry, or returns None to end the run; `take_following`
            unless given.

    Returns:
        None when every entry of the run returned, else the entry that stopped the run (None if
        `take` did), the context it ran in, and the exception or the awaitable.
    """
    take = take or take_following
    while True:
        context = entry.context.copy()
        entry.started_at = started = _now()  # now "running" (see `TaskHandle.status`)
        try:
            result = _call_sync(entry, context)
        except BaseException as exc:
            # Handed back instead of raised: the loop side knows which entry failed or was
            # interrupted (SystemExit, KeyboardInterrupt) and can name it.
            fail(entry, exc, 1, started)
            return entry, context, exc
        if result is not None and inspect.isawaitable(result):
            return entry, context, result  # the entry goes on, on the loop
        # `succeed()`, written out (callbacks registered meanwhile get their event there).
        if listeners:
            succeed(entry, 1, started)
        else:
            entry.finished_at = _now()  # now "succeeded" (see `TaskHandle.status`)
            next(succeeded_counter)
            if entry._waiter is not None:
                entry._waiter.wake()
        try:
            following = take(collector)
        except BaseException as exc:
            return None, context, exc
        if following is None:
            return None
        entry = following


def take_following(collector: Collector) -> Call | None:
    """In an AnyIO worker thread: take the next entry if it is a sync one, else return None.

    Checks for cancellation first, so a cancelled host task stops the run between entries
    instead of waiting for all of them.
    """
    if not is_batchable(collector.next_pending()):
        return None
    from_thread.check_cancelled()
    return cast(Call, collector.take_next())


def _call_sync(entry: Call, context: Context) -> object:
    """Call one sync entry's function in `context` (in a worker thread)."""
    kwargs = entry.kwargs  # without `**` when empty: no copy of it per call (see `run_tasks`)
    if kwargs:
        return context.run(entry.func, *entry.args, **kwargs)
    return context.run(entry.func, *entry.args)


def _call_sync_boxed(entry: Call, context: Context) -> tuple[object]:
    # Boxed: trio's `to_thread.run_sync` refuses a function that returns a coroutine.
    return (_call_sync(entry, context),)
