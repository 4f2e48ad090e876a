"""AnyIO's thread hop with `on_cancel` (`afterward._hop._run_in_anyio_thread`).

The inline path's hop on trio, and on asyncio with an AnyIO older than 4.11 (so these also run in
the lowest-dependencies job). A cancellation is told to `on_cancel` the moment it arrives, while
the hop goes on holding its token and waiting for the thread, then hands its outcome back.
"""

from __future__ import annotations

import threading

import anyio
import anyio.lowlevel
import pytest

from afterward._hop import _AnyioHop, _claim, _run_in_anyio_thread

pytestmark = pytest.mark.anyio


async def test_anyio_hop_returns_or_raises_what_the_function_does() -> None:
    limiter = anyio.CapacityLimiter(1)
    named: list[object] = []
    assert await _run_in_anyio_thread(lambda x: x * 2, (21,), limiter, named.append) == 42

    def fail(_: object) -> None:
        raise LookupError("boom")

    with pytest.raises(LookupError, match="boom"):
        await _run_in_anyio_thread(fail, ("arg",), limiter, named.append)
    assert named == []  # no cancellation, nothing named
    assert limiter.borrowed_tokens == 0


@pytest.mark.parametrize("outcome", ["returns", "raises"])
async def test_anyio_hop_names_the_call_when_cancelled_then_waits_and_hands_the_outcome_back(
    outcome: str,
) -> None:
    started = threading.Event()
    release = threading.Event()
    named: list[str] = []
    results: list[object] = []

    def blocking(tag: str) -> str:
        started.set()
        release.wait(5)
        if outcome == "raises":
            raise LookupError(tag)
        return tag

    limiter = anyio.CapacityLimiter(1)
    scope = anyio.CancelScope()

    async def host() -> None:
        with scope:
            try:
                results.append(await _run_in_anyio_thread(blocking, ("t",), limiter, named.append))
            except LookupError as exc:
                results.append(exc)
            await anyio.lowlevel.checkpoint()  # the cancellation is raised here, at the next await
            results.append("not reached")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(host)
            await anyio.to_thread.run_sync(started.wait)
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert named == ["t"]  # named as the cancellation arrived, the thread still running
            assert limiter.borrowed_tokens == 1  # and its token is held until it is done
            assert results == []
            release.set()
    # On trio the token goes back when trio takes in the thread's end, which it may do a loop
    # turn after the host has gone on: never before the thread is done.
    with anyio.fail_after(5):
        while limiter.borrowed_tokens:
            await anyio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    [result] = results
    if outcome == "returns":
        assert result == "t"
    else:
        assert isinstance(result, LookupError)


async def test_anyio_hop_taken_back_before_the_thread_starts_never_calls_the_function() -> None:
    called: list[object] = []
    hop = _AnyioHop(called.append, ("x",))
    assert _claim(hop.unclaimed)  # the cancelled host takes the call back first
    assert hop.call() is None  # the thread then finds it taken: nothing is called
    assert called == []
    other = _AnyioHop(called.append, ("y",))
    assert other.call() is None  # list.append returns None, but it was called
    assert called == ["y"]
    assert not _claim(other.unclaimed)  # a cancel arriving now finds the call started


async def test_anyio_hop_cancelled_while_waiting_for_a_token_runs_and_names_nothing() -> None:
    limiter = anyio.CapacityLimiter(1)
    await limiter.acquire()  # every token taken: the hop waits for one
    called: list[object] = []
    named: list[object] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_run_in_anyio_thread, called.append, ("x",), limiter, named.append)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    limiter.release()
    assert called == []
    assert named == []
    assert limiter.borrowed_tokens == 0
