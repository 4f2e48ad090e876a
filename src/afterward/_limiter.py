"""afterward's own thread limiter, separate from the one AnyIO shares with sync endpoints."""

from __future__ import annotations

import weakref
from asyncio import events

from anyio import CapacityLimiter, to_thread
from anyio.lowlevel import RunVar

__all__ = ["DEFAULT_THREAD_LIMIT", "current_default_thread_limiter", "request_thread_limiter"]

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
