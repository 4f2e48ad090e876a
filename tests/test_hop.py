"""The thread hop of inline sync tasks (`afterward._hop`): afterward's threads on asyncio."""

from __future__ import annotations

import asyncio
import logging
import threading
from functools import partial
from typing import Any

import anyio
import anyio.from_thread
import pytest

from afterward import BackgroundTasks
from afterward._hop import current_job, run_sync

pytestmark = pytest.mark.anyio


def is_hop_thread() -> bool:
    return threading.current_thread().name.startswith("afterward-hop")


async def test_returns_what_the_function_returns_in_a_worker_thread(
    anyio_backend_name: str,
) -> None:
    limiter = anyio.CapacityLimiter(1)
    loop_thread = threading.get_ident()
    ident, ours = await run_sync(lambda: (threading.get_ident(), is_hop_thread()), limiter=limiter)
    assert ident != loop_thread
    # asyncio uses afterward's own threads; trio keeps AnyIO's `to_thread`.
    assert ours is (anyio_backend_name == "asyncio")
    assert limiter.borrowed_tokens == 0


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # trio's thread cache is trio's own
async def test_consecutive_hops_reuse_the_worker_threads() -> None:
    def hop_threads() -> int:
        return sum(t.name.startswith("afterward-hop") for t in threading.enumerate())

    limiter = anyio.CapacityLimiter(1)
    await run_sync(threading.get_ident, limiter=limiter)
    before = hop_threads()
    idents = {await run_sync(threading.get_ident, limiter=limiter) for _ in range(20)}
    assert hop_threads() == before  # no thread started per hop
    assert len(idents) <= before


async def test_a_raised_exception_reaches_the_caller() -> None:
    def fail() -> None:
        raise LookupError("boom")

    with pytest.raises(LookupError, match="boom"):
        await run_sync(fail, limiter=anyio.CapacityLimiter(1))


async def test_the_token_is_held_while_the_function_runs() -> None:
    limiter = anyio.CapacityLimiter(2)
    borrowed = await run_sync(
        lambda: anyio.from_thread.run_sync(lambda: limiter.borrowed_tokens), limiter=limiter
    )
    assert borrowed == 1
    assert limiter.borrowed_tokens == 0


async def test_a_full_limiter_delays_the_call_until_a_token_is_free() -> None:
    limiter = anyio.CapacityLimiter(1)
    called = threading.Event()
    await limiter.acquire()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(run_sync, called.set, limiter=limiter))
            await anyio.wait_all_tasks_blocked()
            assert not called.is_set()
            limiter.release()
    assert called.is_set()


async def test_an_already_cancelled_scope_queues_nothing() -> None:
    called = threading.Event()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await run_sync(called.set, limiter=anyio.CapacityLimiter(1))
    assert scope.cancelled_caught
    assert not called.is_set()


async def test_cancelled_while_waiting_for_a_token_runs_nothing() -> None:
    limiter = anyio.CapacityLimiter(1)
    called = threading.Event()
    await limiter.acquire()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(run_sync, called.set, limiter=limiter))
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    limiter.release()
    assert not called.is_set()
    assert limiter.borrowed_tokens == 0


async def test_a_cancelled_host_waits_for_the_running_function_and_it_sees_the_cancel(
    anyio_backend_name: str,
) -> None:
    cancelled_exc = anyio.get_cancelled_exc_class()
    started = anyio.Event()
    release = threading.Event()
    seen: list[bool] = []

    def blocking() -> None:
        anyio.from_thread.run_sync(started.set)
        release.wait(5)
        job = current_job()
        seen.append(job.cancelled() if job is not None else False)
        try:
            anyio.from_thread.check_cancelled()
        except cancelled_exc:
            seen.append(True)

    limiter = anyio.CapacityLimiter(1)
    scope = anyio.CancelScope()

    async def host() -> None:
        with scope:
            await run_sync(blocking, limiter=limiter)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(host)
            await started.wait()
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert limiter.borrowed_tokens == 1  # still held: the host waits for the thread
            release.set()
    assert limiter.borrowed_tokens == 0
    # `current_job()` is afterward's (asyncio); AnyIO's own check works on both backends.
    assert seen == [anyio_backend_name == "asyncio", True]


async def test_a_cancelled_batch_stops_between_tasks_and_names_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = anyio.Event()
    release = threading.Event()
    ran: list[str] = []

    def first() -> None:
        anyio.from_thread.run_sync(started.set)
        release.wait(5)
        ran.append("first")

    def second() -> None:
        ran.append("second")

    tasks = BackgroundTasks()
    tasks.add_task(first)
    tasks.add_task(second)
    scope = anyio.CancelScope()

    async def host() -> None:
        with scope:
            await tasks()

    with caplog.at_level(logging.INFO, logger="afterward"), anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(host)
            await started.wait()
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert ran == []
            release.set()
    assert ran == ["first"]
    assert "second" in caplog.text


async def test_a_task_returning_an_awaitable_has_it_awaited_on_the_loop() -> None:
    done: list[str] = []

    async def later() -> None:
        done.append("awaited")

    def wrapper() -> Any:
        return later()

    tasks = BackgroundTasks()
    tasks.add_task(wrapper)
    tasks.add_task(lambda: done.append("next"))
    await tasks()
    assert done == ["awaited", "next"]


async def test_a_failing_task_is_logged_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    def fail() -> None:
        raise RuntimeError("task failed")

    tasks = BackgroundTasks()
    tasks.add_task(fail)
    tasks.add_task(lambda: ran.append("next"))
    with caplog.at_level(logging.ERROR, logger="afterward"):
        await tasks()
    assert ran == ["next"]
    assert "task failed" in caplog.text


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_native_asyncio_cancel_also_waits_for_the_running_function() -> None:
    started = anyio.Event()
    release = threading.Event()
    finished: list[bool] = []

    def blocking() -> None:
        anyio.from_thread.run_sync(started.set)
        release.wait(5)
        finished.append(True)

    task = asyncio.ensure_future(run_sync(blocking, limiter=anyio.CapacityLimiter(1)))
    with anyio.fail_after(5):
        await started.wait()
    task.cancel()
    await anyio.wait_all_tasks_blocked()
    task.cancel()  # a second cancel is absorbed too
    await anyio.wait_all_tasks_blocked()
    assert not task.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == [True]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # trio's thread cache is trio's own
async def test_a_steady_stream_of_hops_starts_no_more_threads_than_the_limiter_has_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each caller hops again as soon as its result is back: the worker that handed it back is
    # on its way to the queue, and must be counted so (it used to be seen as busy, and a new
    # thread was started for a job it then took: 14 to 19 threads for 4 tokens).
    from afterward import _hop
    from afterward._workers import WorkerPool

    pool = WorkerPool(_hop.POOL_SIZE, name="test-hop")
    monkeypatch.setattr(_hop, "_pool", pool)
    limiter = anyio.CapacityLimiter(4)

    async def stream() -> None:
        for _ in range(1000):
            await run_sync(int, 1, limiter=limiter)

    async with anyio.create_task_group() as group:
        for _ in range(16):
            group.start_soon(stream)
    assert len(pool._threads) <= 4, len(pool._threads)
    pool.close()
