"""The Runner: executes one collector's tasks after the response.

Order is the order of `add_task`. A run of consecutive sync tasks is a single
`anyio.to_thread.run_sync` call on afterward's limiter (one thread hop instead of one per task);
async tasks are awaited on the event loop. Each task runs in the context captured when it was
added. A task that raises is logged and reported, and the next one runs. Cancellation is never
swallowed: the tasks it prevents are logged by name before it propagates.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Generator
from contextvars import Context, copy_context
from functools import partial
from typing import TYPE_CHECKING, Any

from anyio import from_thread, to_thread

from ._limiter import task_hop_limiter
from ._report import entry_name, logger, names
from ._tasks import BackgroundTask
from ._tracing import active_hook, run_through_hook

if TYPE_CHECKING:
    from starlette.background import BackgroundTask as StarletteTask

    from ._tasks import BackgroundTasks

__all__ = ["is_plain_sync", "run_tasks"]


async def run_tasks(collector: BackgroundTasks, *, until_sync: bool = False) -> None:
    """Run the collector's tasks that have not been started yet, in order.

    With `until_sync`, stop before the first plain sync task (the supervisor gives those to its
    worker threads).
    """
    tasks = collector.tasks
    running: Any = None  # the task being run, named in the log if the run is interrupted
    hook = active_hook()
    try:
        while collector._next < len(tasks):
            index = collector._next
            entry = tasks[index]
            if until_sync and hook is None and is_plain_sync(entry):
                return
            ours = isinstance(entry, BackgroundTask)
            if hook is not None:
                # A tracing tool hooks Starlette's or FastAPI's task running: every entry goes
                # through it on its own (no batch), so each gets its span.
                collector._next = index + 1
                running = entry
                try:
                    await run_through_hook(
                        hook, entry, partial(_run_in, collector) if ours else None
                    )
                except Exception as exc:
                    await _report_failure(collector, entry, exc)
                running = None
                continue
            awaitable: Any = None
            if ours and not entry.is_async:
                end = index + 1
                while end < len(tasks) and _is_sync(tasks[end]):
                    end += 1
                limiter = task_hop_limiter(collector.limiter)
                stopped = await to_thread.run_sync(
                    _run_sync_batch, collector, tasks, end, limiter=limiter
                )
                if stopped is None:
                    continue
                running, outcome = stopped
                if isinstance(outcome, Exception):
                    await _report_failure(collector, running, outcome)
                    running = None
                    continue
                if isinstance(outcome, BaseException):
                    raise outcome  # with `running` set, so the log names the interrupted task
                # A sync function returned an awaitable (a sync wrapper around an async
                # function): await it on the loop instead of dropping it un-awaited.
                awaitable = outcome
            else:
                collector._next = index + 1
                running = entry
            error = None
            try:
                if not ours:
                    # Anything else Starlette accepts as a task (its own BackgroundTask or
                    # BackgroundTasks, another awaitable callable): run it as it runs itself.
                    await entry()
                elif awaitable is None and running.context == copy_context():
                    # Nothing has been set since add_task: the context running now holds exactly
                    # the captured values, and a plain await is cheaper than driving the steps.
                    # (Equal contexts compare in O(1) when unchanged.) A later task whose
                    # captured context then differs from this one runs in its own, below.
                    await entry.func(*entry.args, **entry.kwargs)
                else:
                    if awaitable is None:
                        # Calling an async function only creates its coroutine (no user code
                        # runs yet), so only its steps need the captured context.
                        awaitable = entry.func(*entry.args, **entry.kwargs)
                    context = running.context
                    iterator = (
                        awaitable
                        if type(awaitable) is types.CoroutineType
                        else awaitable.__await__()
                    )
                    try:
                        yielded = context.run(iterator.send, None)
                    except StopIteration:
                        pass  # done without suspending, as most short tasks are
                    else:
                        await _resume(context, iterator, yielded)
            except Exception as exc:
                error = exc
            if error is not None:
                await _report_failure(collector, running, error)
            running = None
    except BaseException as exc:
        _log_abandoned(collector, running, exc)
        raise


def is_plain_sync(entry: object) -> bool:
    """Whether `entry` is a sync afterward task that can be called directly in a worker thread."""
    return type(entry) is BackgroundTask and not entry.is_async


def _is_sync(entry: object) -> bool:
    return isinstance(entry, BackgroundTask) and not entry.is_async


def _run_sync_batch(
    collector: BackgroundTasks, tasks: list[Any], end: int
) -> tuple[BackgroundTask, Any] | None:
    """Run `tasks[collector._next:end]` in this worker thread; stop at a failure or an awaitable.

    Returns:
        None when every task returned, else the task that stopped the batch with its exception or
        the awaitable it returned.
    """
    first = True
    while collector._next < end:
        if not first:
            # Lets a cancelled host task stop the batch between tasks instead of waiting for all.
            from_thread.check_cancelled()
        first = False
        task: BackgroundTask = tasks[collector._next]
        collector._next += 1
        try:
            result = task.context.run(task.func, *task.args, **task.kwargs)
        except BaseException as exc:
            # Handed back instead of raised: the loop side knows which task failed or was
            # interrupted (SystemExit, KeyboardInterrupt) and can name it.
            return task, exc
        if result is not None and inspect.isawaitable(result):
            return task, result
    return None


async def _run_in(collector: BackgroundTasks, task: BackgroundTask, context: Context) -> None:
    """Run one afterward task in `context`, raising what it raises (the traced path)."""
    call = partial(context.run, task.func, *task.args, **task.kwargs)
    if task.is_async:
        awaitable = call()
    else:
        # Boxed: trio refuses a thread's function that returns a coroutine.
        [awaitable] = await to_thread.run_sync(
            lambda: [call()], limiter=task_hop_limiter(collector.limiter)
        )
        if awaitable is None or not inspect.isawaitable(awaitable):
            return
    iterator = awaitable if type(awaitable) is types.CoroutineType else awaitable.__await__()
    try:
        yielded = context.run(iterator.send, None)
    except StopIteration:
        return
    await _resume(context, iterator, yielded)


@types.coroutine
def _resume(context: Context, iterator: Any, yielded: Any) -> Generator[Any, Any, None]:
    """Drive a suspended coroutine to its end, each step inside `context`.

    This is how an async task sees the context captured at `add_task` without a task of its own.
    Whatever the coroutine yields to the event loop (asyncio futures, trio traps) is passed
    through untouched, so it works on any AnyIO backend, and cancellation reaches the task as
    usual: it is thrown into the coroutine, inside `context` as well.
    """
    while True:
        try:
            value = yield yielded
        except BaseException as exc:
            step, argument = iterator.throw, exc
        else:
            step, argument = iterator.send, value
        try:
            yielded = context.run(step, argument)
        except StopIteration:
            return


async def _report_failure(collector: BackgroundTasks, task: StarletteTask, exc: Exception) -> None:
    name = entry_name(task)
    logger.error(
        "Background task %s failed; %s.",
        name,
        "the remaining tasks are skipped (stop_on_error)"
        if collector.stop_on_error
        else "the remaining tasks still run",
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={"afterward_task": name},
    )
    if collector.on_error is not None:
        try:
            result = collector.on_error(task, exc)
            if inspect.isawaitable(result):
                await result
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


def _log_abandoned(
    collector: BackgroundTasks, running: StarletteTask | None, exc: BaseException
) -> None:
    never_started = collector.skip_pending()
    if running is None and not never_started:
        return
    logger.warning(
        "Background tasks stopped by %s: %s; %d task(s) never started: %s.",
        type(exc).__name__,
        f"{entry_name(running)} was interrupted" if running is not None else "none was running",
        len(never_started),
        names(never_started) or "none",
    )
