"""afterward's own thread limiter, separate from the one AnyIO shares with sync endpoints."""

from __future__ import annotations

from anyio import CapacityLimiter
from anyio.lowlevel import RunVar

__all__ = ["DEFAULT_THREAD_LIMIT", "current_default_thread_limiter"]

DEFAULT_THREAD_LIMIT = 40
"""How many sync background tasks may run in worker threads at once, per event loop."""

_default_limiter: RunVar[CapacityLimiter] = RunVar("afterward_default_thread_limiter")


def current_default_thread_limiter() -> CapacityLimiter:
    """Return the limiter sync background tasks use unless a collector is given its own.

    There is one per event loop, with `DEFAULT_THREAD_LIMIT` tokens. It is not AnyIO's default
    thread limiter, so slow sync tasks cannot starve sync endpoints and dependencies (Starlette
    and FastAPI run both on that one pool). Change its size with `.total_tokens = N` at startup.

    Returns:
        The event loop's `anyio.CapacityLimiter` for background tasks.
    """
    try:
        return _default_limiter.get()
    except LookupError:
        limiter = CapacityLimiter(DEFAULT_THREAD_LIMIT)
        _default_limiter.set(limiter)
        return limiter
