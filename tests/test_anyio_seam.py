"""The assumptions afterward makes about AnyIO's and its backends' internals (`_anyio_seam`).

Each test pins one of them on asyncio and on trio, so that a release that changes one fails here.
"""

from __future__ import annotations

import threading
from typing import Any

import anyio
import anyio.to_thread
import pytest

from afterward._anyio_seam import current_loop, on_asyncio, prompt_limiter
from helpers import wait_until_a_task_waits_for

pytestmark = pytest.mark.anyio


def test_outside_an_event_loop_there_is_no_current_loop() -> None:
    import trio  # noqa: F401 -- imported, so the trio branch is asked too

    assert current_loop() is None


async def test_current_loop_is_the_running_loop_and_tells_the_backend(
    anyio_backend: str,
) -> None:
    loop = current_loop()
    assert loop is not None
    assert current_loop() is loop
    assert on_asyncio() is (anyio_backend == "asyncio")
    if anyio_backend == "asyncio":
        import asyncio

        assert loop is asyncio.get_running_loop()
    else:
        import trio

        assert loop is trio.lowlevel.current_trio_token()


async def test_a_loop_in_another_thread_is_another_loop() -> None:
    here = current_loop()

    async def there() -> object:
        return current_loop()

    other = await anyio.to_thread.run_sync(anyio.run, there)
    assert other is not None
    assert other is not here


async def test_prompt_view_lends_a_free_token_to_the_thread_and_returns_it() -> None:
    limiter = anyio.CapacityLimiter(2)
    view = prompt_limiter(limiter)
    assert view is not limiter
    borrowed = await anyio.to_thread.run_sync(lambda: limiter.borrowed_tokens, limiter=view)
    assert borrowed == 1
    assert limiter.borrowed_tokens == 0


async def test_prompt_view_waits_in_the_limiters_queue_when_no_token_is_free() -> None:
    limiter = anyio.CapacityLimiter(1)
    view = prompt_limiter(limiter)
    ran = threading.Event()
    async with anyio.create_task_group() as tg:
        await limiter.acquire()
        tg.start_soon(lambda: anyio.to_thread.run_sync(ran.set, limiter=view))
        await wait_until_a_task_waits_for(limiter)
        assert not ran.is_set()
        limiter.release()
    assert ran.is_set()
    assert limiter.borrowed_tokens == 0


async def test_prompt_view_does_not_hide_an_error_of_the_limiter() -> None:
    class Broken:
        """A limiter whose non-blocking methods have a bug (`except Exception` would hide it)."""

        def acquire_nowait(self) -> None:
            raise RuntimeError("a bug in the limiter")

        def acquire_on_behalf_of_nowait(self, borrower: object) -> None:
            raise RuntimeError("a bug in the limiter")

    view = prompt_limiter(Broken())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="a bug in the limiter"):
        await anyio.to_thread.run_sync(lambda: None, limiter=view)


async def test_an_object_without_the_non_blocking_method_is_used_as_it_is() -> None:
    limiter: Any = object()
    assert prompt_limiter(limiter) is limiter
