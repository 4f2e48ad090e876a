"""The request slot behind `current_tasks()`, and the loop call-back the worker threads use."""

from __future__ import annotations

import asyncio
import gc
import threading

import anyio
import pytest

from afterward import BackgroundTasks
from afterward._current import RequestSlot
from afterward._loopcall import LoopCaller


def test_a_slot_makes_its_collector_on_first_use_and_keeps_it() -> None:
    slot = RequestSlot(BackgroundTasks, "a test")
    assert slot.tasks is None
    first = slot.open()
    assert slot.open() is first
    assert slot.adopt(BackgroundTasks()) is first  # someone opened it first: that one stays


def test_a_factory_that_returns_something_else_is_named_in_the_error() -> None:
    slot = RequestSlot(list, "the middleware of this test")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="the middleware of this test returned"):
        slot.open()


def test_a_released_slot_finds_its_collector_only_while_someone_still_runs_it() -> None:
    slot = RequestSlot(BackgroundTasks, "a test")
    tasks = slot.open()
    slot.release()
    assert slot.tasks is None  # no strong reference left: no cycle through the tasks' contexts
    assert slot.open() is tasks  # the runner still holds it
    del tasks
    gc.collect()
    with pytest.raises(RuntimeError, match="request is over"):
        slot.open()


def test_a_released_slot_that_never_had_a_collector_makes_none_now() -> None:
    slot = RequestSlot(BackgroundTasks, "a test")
    slot.release()
    with pytest.raises(RuntimeError, match="would never run"):
        slot.open()


def test_the_loop_caller_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="asyncio or trio event loop"):
        LoopCaller.current()


@pytest.mark.anyio
async def test_the_loop_caller_calls_on_the_loop_from_a_thread() -> None:
    caller = LoopCaller.current()
    called = anyio.Event()
    threads: list[int] = []

    def on_loop() -> None:
        threads.append(threading.get_ident())
        called.set()

    assert await anyio.to_thread.run_sync(caller.call_soon, on_loop)
    with anyio.fail_after(5):
        await called.wait()
    assert threads == [threading.get_ident()]


def test_the_loop_caller_says_when_the_loop_has_closed() -> None:
    async def capture() -> LoopCaller:
        return LoopCaller.current()

    loop = asyncio.new_event_loop()
    caller = loop.run_until_complete(capture())
    loop.close()
    assert caller.call_soon(print) is False
