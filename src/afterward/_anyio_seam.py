"""The one place where afterward relies on how AnyIO and its backends work inside.

Everything else in afterward uses AnyIO's public API. What is here trades that for speed on the
hot path, and `tests/test_anyio_seam.py` pins each assumption on asyncio and on trio, so a
release of AnyIO or trio that changes one fails those tests rather than a user's request:

- `current_loop()`: which event loop is running, without AnyIO's `RunVar` lookup (about 2 µs).
  asyncio's private `events._get_running_loop()` is the C function behind the public
  `get_running_loop()`, minus the exception when none runs; trio is looked up in `sys.modules`
  so that afterward never imports it (trio is optional).
- `prompt_limiter(limiter)`: a view of a `CapacityLimiter` for `to_thread.run_sync(limiter=...)`
  that takes a free token at once, skipping the second event-loop turn of `limiter.acquire()`.
  Each backend uses the limiter through a different method (asyncio's as an async context
  manager, trio's through `acquire_on_behalf_of`), so there is one view per backend.
"""

from __future__ import annotations

import sys
from asyncio import events
from types import TracebackType
from typing import Any, cast

from anyio import CapacityLimiter, WouldBlock

__all__ = ["current_loop", "on_asyncio", "prompt_limiter"]


def current_loop() -> object | None:
    """Return the running asyncio loop or trio run (its token), or None outside of both."""
    loop = events._get_running_loop()
    if loop is None and "trio" in sys.modules:
        try:
            token: object = sys.modules["trio"].lowlevel.current_trio_token()
        except RuntimeError:  # not in a trio run
            return None
        return token
    return loop


def on_asyncio() -> bool:
    """Return whether the running event loop is asyncio's (else it is trio's)."""
    return events._get_running_loop() is not None


def prompt_limiter(limiter: CapacityLimiter) -> CapacityLimiter:
    """Return a view of `limiter` that lends a free token without an event-loop turn.

    Only a limiter with the non-blocking method the view needs gets one; anything else that
    AnyIO accepts as a limiter is returned as it is, and AnyIO uses it as usual.
    """
    if on_asyncio():
        if hasattr(limiter, "acquire_nowait"):
            return cast(CapacityLimiter, _PromptAsyncioLimiter(limiter))
    elif hasattr(limiter, "acquire_on_behalf_of_nowait"):
        return cast(CapacityLimiter, _PromptTrioLimiter(limiter))
    return limiter


class _PromptAsyncioLimiter:
    """A limiter's asyncio face for `to_thread.run_sync`, which enters it with `async with`."""

    __slots__ = ("limiter",)

    def __init__(self, limiter: CapacityLimiter) -> None:
        self.limiter = limiter

    async def __aenter__(self) -> None:
        try:
            self.limiter.acquire_nowait()
        except WouldBlock:  # no token free: wait in the limiter's own queue
            await self.limiter.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.limiter.release()


class _PromptTrioLimiter:
    """The same for trio, whose `to_thread.run_sync` borrows tokens on behalf of its thread."""

    __slots__ = ("limiter",)

    def __init__(self, limiter: CapacityLimiter) -> None:
        self.limiter = limiter

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        try:
            self.limiter.acquire_on_behalf_of_nowait(borrower)
        except _trio_would_block():  # no token free: wait in the limiter's own queue
            await self.limiter.acquire_on_behalf_of(borrower)

    def release_on_behalf_of(self, borrower: object) -> None:
        self.limiter.release_on_behalf_of(borrower)


def _trio_would_block() -> tuple[type[Exception], ...]:
    # AnyIO's limiter raises AnyIO's WouldBlock; a plain trio.CapacityLimiter raises trio's own.
    # Only asked under trio, so trio is imported already.
    trio: Any = sys.modules["trio"]
    return (WouldBlock, trio.WouldBlock)
