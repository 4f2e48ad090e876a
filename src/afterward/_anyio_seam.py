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
- For the inline hop to afterward's own worker threads (`_hop.py`, asyncio only):
  `host_cancel_scope()` reads the current task's AnyIO cancel scope, `scope_cancelled(scope)`
  checks its chain as `from_thread.check_cancelled()` does, and `claimed_for(loop, scope)` makes a
  thread of ours look like one of AnyIO's to `anyio.from_thread`. These need AnyIO >= 4.11
  (`EventLoopToken`); with an older AnyIO `OWN_THREAD_HOPS` is False and the hop is AnyIO's
  `to_thread.run_sync`, unchanged.
"""

from __future__ import annotations

import asyncio
import sys
from asyncio import events
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, cast

from anyio import CapacityLimiter, WouldBlock

try:
    from anyio._backends._asyncio import AsyncIOBackend, _task_states
    from anyio._core._eventloop import threadlocals
    from anyio.lowlevel import EventLoopToken
except ImportError:  # an AnyIO older than 4.11: the hop stays AnyIO's
    OWN_THREAD_HOPS = False
else:
    OWN_THREAD_HOPS = True

__all__ = [
    "OWN_THREAD_HOPS",
    "claimed_for",
    "current_loop",
    "host_cancel_scope",
    "on_asyncio",
    "prompt_limiter",
    "scope_cancelled",
]


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


def host_cancel_scope() -> object | None:
    """Return the AnyIO cancel scope of the running asyncio task, or None if it has none."""
    state = _task_states.get(asyncio.current_task())  # type: ignore[arg-type]
    return None if state is None else state.cancel_scope


def scope_cancelled(scope: Any) -> bool:
    """Whether `scope` or an unshielded scope around it was cancelled (AnyIO's own check)."""
    while scope is not None:
        if scope.cancel_called:
            return True
        if scope.shield:
            return False
        scope = scope._parent_scope
    return False


@contextmanager
def claimed_for(loop: asyncio.AbstractEventLoop, cancel_scope: object) -> Iterator[None]:
    """In a thread of ours: let `anyio.from_thread` find `loop` and `cancel_scope` while inside."""
    threadlocals.current_token = EventLoopToken(AsyncIOBackend, loop)
    threadlocals.current_cancel_scope = cancel_scope
    try:
        yield
    finally:
        del threadlocals.current_token, threadlocals.current_cancel_scope
