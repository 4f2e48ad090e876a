"""afterward's own thread limiter, separate from the one AnyIO shares with sync endpoints."""

from __future__ import annotations

import weakref
from asyncio import events
from types import TracebackType
from typing import cast

from anyio import CapacityLimiter, WouldBlock, to_thread
from anyio.lowlevel import RunVar

__all__ = [
    "DEFAULT_THREAD_LIMIT",
    "current_default_thread_limiter",
    "for_thread_hop",
    "request_thread_limiter",
]

DEFAULT_THREAD_LIMIT = 40
"""How many sync background tasks may run in worker threads at once, per event loop."""

_default_limiter: RunVar[CapacityLimiter] = RunVar("afterward_default_thread_limiter")

# Looking a RunVar up costs about 2 µs, more than the rest of a short task's bookkeeping, so the
# limiters of the last asyncio loop seen are kept here (the loop by weak reference, so a closed
# loop is not kept alive). Other loops, and trio, take the RunVar path, which is always right.
_cached: tuple[weakref.ref[object], tuple[CapacityLimiter, CapacityLimiter]] | None = None


def current_default_thread_limiter() -> CapacityLimiter:
    """Return the limiter sync background tasks use unless a collector is given its own.

    There is one per event loop, with `DEFAULT_THREAD_LIMIT` tokens. It is not AnyIO's default
    thread limiter, so slow sync tasks cannot starve sync endpoints and dependencies (Starlette
    and FastAPI run both on that one pool). Change its size with `.total_tokens = N` at startup.

    Returns:
        The event loop's `anyio.CapacityLimiter` for background tasks.
    """
    return _limiters()[0]


def request_thread_limiter() -> CapacityLimiter:
    """Return AnyIO's default thread limiter, the one sync endpoints and dependencies use."""
    return _limiters()[1]


def _limiters() -> tuple[CapacityLimiter, CapacityLimiter]:
    global _cached
    loop = events._get_running_loop()
    if loop is not None and _cached is not None and _cached[0]() is loop:
        return _cached[1]
    try:
        ours = _default_limiter.get()
    except LookupError:
        ours = CapacityLimiter(DEFAULT_THREAD_LIMIT)
        _default_limiter.set(ours)
    limiters = ours, to_thread.current_default_thread_limiter()
    if loop is not None:
        _cached = weakref.ref(loop), limiters
    return limiters


def for_thread_hop(limiter: CapacityLimiter) -> CapacityLimiter:
    """Return what to pass as `limiter=` to `anyio.to_thread.run_sync` to hop under `limiter`.

    On asyncio, a `_PromptLimiter` view of it; elsewhere (trio takes the limiter through its own
    protocol) the limiter itself.
    """
    if events._get_running_loop() is None:
        return limiter
    return cast(CapacityLimiter, _PromptLimiter(limiter))


class _PromptLimiter:
    """Takes a free token of a limiter without the extra event-loop turn of `acquire()`.

    `to_thread.run_sync` checkpoints before it enters its limiter, so cancellation has already
    had its chance; AnyIO's asyncio `CapacityLimiter.acquire()` then checkpoints once more, which
    costs one of the three event-loop turns of a thread hop. With no token free, this waits in
    `acquire()` as usual, in the limiter's own queue.
    """

    __slots__ = ("limiter",)

    def __init__(self, limiter: CapacityLimiter) -> None:
        self.limiter = limiter

    async def __aenter__(self) -> None:
        try:
            self.limiter.acquire_nowait()
        except WouldBlock:
            await self.limiter.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.limiter.release()
