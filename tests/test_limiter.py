"""afterward's own thread limiter (`afterward.current_default_thread_limiter`)."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

import afterward
from afterward import BackgroundTasks
from helpers import wait_until_a_task_waits_for


def test_default_thread_limit_is_forty() -> None:
    assert afterward.DEFAULT_THREAD_LIMIT == 40


@pytest.mark.anyio
async def test_default_limiter_has_the_default_number_of_threads() -> None:
    limiter = afterward.current_default_thread_limiter()
    assert isinstance(limiter, anyio.CapacityLimiter)
    assert limiter.total_tokens == afterward.DEFAULT_THREAD_LIMIT
    assert limiter.borrowed_tokens == 0


@pytest.mark.anyio
async def test_default_limiter_is_not_anyios_default_limiter() -> None:
    """Slow sync tasks must not take the threads that sync endpoints and dependencies use."""
    assert afterward.current_default_thread_limiter() is not (
        anyio.to_thread.current_default_thread_limiter()
    )


@pytest.mark.anyio
async def test_default_limiter_is_the_same_everywhere_in_one_event_loop() -> None:
    seen: list[anyio.CapacityLimiter] = []

    async def get() -> None:
        seen.append(afterward.current_default_thread_limiter())

    async with anyio.create_task_group() as tg:
        tg.start_soon(get)
        tg.start_soon(get)
    await get()
    first = seen[0]
    assert all(limiter is first for limiter in seen)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_each_event_loop_gets_its_own_default_limiter(backend: str) -> None:
    async def get() -> anyio.CapacityLimiter:
        return afterward.current_default_thread_limiter()

    first = anyio.run(get, backend=backend)
    second = anyio.run(get, backend=backend)
    assert first is not second


@pytest.mark.anyio
async def test_resizing_the_default_limiter_changes_how_many_sync_tasks_run_at_once() -> None:
    limiter = afterward.current_default_thread_limiter()
    limiter.total_tokens = 1
    try:
        await limiter.acquire()  # the one thread is taken
        ran: list[str] = []
        tasks = BackgroundTasks()
        tasks.add_task(ran.append, "ran")
        async with anyio.create_task_group() as tg:
            tg.start_soon(tasks)
            await wait_until_a_task_waits_for(limiter)
            assert ran == []  # waiting for the thread
            limiter.release()
        assert ran == ["ran"]
        assert afterward.current_default_thread_limiter().total_tokens == 1
    finally:
        limiter.total_tokens = afterward.DEFAULT_THREAD_LIMIT


@pytest.mark.anyio
async def test_the_limiters_of_each_event_loop_are_its_own() -> None:
    first = afterward.current_default_thread_limiter()
    assert afterward.current_default_thread_limiter() is first  # cached

    async def in_another_loop() -> anyio.CapacityLimiter:
        return afterward.current_default_thread_limiter()

    other = await anyio.to_thread.run_sync(anyio.run, in_another_loop)
    assert other is not first
    assert afterward.current_default_thread_limiter() is first


def test_a_plain_trio_limiter_given_to_a_collector_works_under_trio() -> None:
    """Runs on trio only (a `trio.CapacityLimiter` exists only there), so it calls `trio.run`."""
    import trio

    ran: list[float] = []

    async def main() -> None:
        limiter = trio.CapacityLimiter(1)
        tasks = BackgroundTasks(limiter=limiter)  # type: ignore[arg-type]
        tasks.add_task(lambda: ran.append(limiter.borrowed_tokens))
        async with trio.open_nursery() as nursery:
            await limiter.acquire()  # no token free: the hop waits in trio's own queue
            nursery.start_soon(tasks)
            with trio.fail_after(5):
                while limiter.statistics().tasks_waiting == 0:
                    await trio.lowlevel.checkpoint()
            assert ran == []
            limiter.release()

    trio.run(main)
    assert ran == [1]


@pytest.mark.anyio
async def test_cancelling_a_run_waiting_for_a_thread_token_leaks_no_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = anyio.CapacityLimiter(1)
    ran: list[str] = []
    tasks = BackgroundTasks(limiter=limiter)
    tasks.add_task(ran.append, "never")
    async with anyio.create_task_group() as tg:
        await limiter.acquire()  # the only token is taken: the hop has to wait for it
        tg.start_soon(tasks)
        await wait_until_a_task_waits_for(limiter)
        tg.cancel_scope.cancel()
    limiter.release()
    assert ran == []
    assert limiter.borrowed_tokens == 0
    assert limiter.statistics().tasks_waiting == 0
    assert "1 task(s) never started" in caplog.text
