"""A cancellation that finds a sync task running in its worker thread names it at once.

A thread cannot be stopped, so the runner waits for it; but the process may not live that long
(a server's graceful-shutdown deadline cancels the request, then exits). The running task, and
the tasks after it that will now never start, are named the moment the cancellation arrives,
and the run still stops before its next task.
"""

from __future__ import annotations

import logging
import threading

import anyio
import pytest

import afterward
from afterward import BackgroundTasks
from afterward._failures import abandoned_in_thread

pytestmark = pytest.mark.anyio

release = threading.Event()


def block(started: threading.Event, ran: list[str]) -> None:
    started.set()
    release.wait(10)
    ran.append("block")


def record(ran: list[str], item: str) -> None:
    ran.append(item)


async def record_async(ran: list[str], item: str) -> None:
    ran.append(item)


@pytest.mark.parametrize("kind", ["plain", "with a policy"])
async def test_the_task_in_its_thread_and_those_after_it_are_named_when_the_cancel_arrives(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="afterward")
    started = threading.Event()
    ran: list[str] = []
    tasks = BackgroundTasks()
    tasks.add_task(record, ran, "before")
    # A task with a policy runs attempt by attempt, in a thread hop of its own.
    func = block if kind == "plain" else afterward.task(block, retries=1)
    blocked = tasks.add_task(func, started, ran)
    tasks.add_task(record, ran, "after")
    tasks.add_task(record_async, ran, "async after")
    release.clear()
    named = anyio.Event()

    class Named(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            named.set()  # written on the event loop, as the cancellation arrives

    async def run(scope: anyio.CancelScope) -> None:
        with scope:
            await tasks()

    handler = Named(logging.WARNING)
    logging.getLogger("afterward").addHandler(handler)
    try:
        async with anyio.create_task_group() as group:
            scope = anyio.CancelScope()
            group.start_soon(run, scope)
            with anyio.fail_after(5):
                await anyio.to_thread.run_sync(started.wait)
            scope.cancel()
            with anyio.fail_after(5):
                await named.wait()
            # The thread is still blocked: the line did not wait for it.
            assert ran == ["before"]
            release.set()
    finally:
        logging.getLogger("afterward").removeHandler(handler)

    [record_] = caplog.records
    message = record_.getMessage()
    assert "test_cancel_in_thread.block is still running in its worker thread" in message
    assert "threads cannot be cancelled" in message
    assert "2 task(s) never started: test_cancel_in_thread.record, " in message
    assert "test_cancel_in_thread.record_async" in message
    assert record_.levelno == logging.WARNING
    assert ran == ["before", "block"]  # the run stopped before its next task
    assert [getattr(t, "status", None) for t in tasks.tasks] == [
        "succeeded",
        "succeeded",
        "abandoned",
        "abandoned",
    ]
    assert blocked.status == "succeeded"
    assert not abandoned_in_thread  # the runner keeps no collector


async def test_a_cancel_during_a_run_of_sync_tasks_names_each_task_it_stops_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="afterward")
    ran: list[str] = []
    tasks = BackgroundTasks()
    scope = anyio.CancelScope()

    def cancel_then_return() -> None:
        anyio.from_thread.run_sync(scope.cancel)
        ran.append("cancel")

    tasks.add_task(cancel_then_return)
    tasks.add_task(record, ran, "after")
    with scope:
        await tasks()
    assert ran == ["cancel"]
    assert not abandoned_in_thread
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    assert "1 task(s) never started: test_cancel_in_thread.record." in messages[0]
