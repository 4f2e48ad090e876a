"""afterward's own thread limiter, and the cheapest correct way to hop to a thread under one.

Two costs of `anyio.to_thread.run_sync` are avoidable, and both are paid once per thread hop:

- Looking up a limiter kept in an AnyIO `RunVar` (one per event loop) costs about 2 µs. The
  limiters of the last event loop seen are kept here instead, the loop held by weak reference.
- After `to_thread.run_sync` has checkpointed, the limiter's `acquire` checkpoints again: on
  asyncio that is one of the hop's three event-loop turns. The hops are given a view of the
  limiter that takes a free token at once and only waits, in the limiter's own queue, when none
  is free.
"""

from __future__ import annotations

import sys
import weakref
from asyncio import events
from collections.abc import Callable
from types import TracebackType
from typing import cast

from anyio import CapacityLimiter, to_thread
from anyio.lowlevel import RunVar

__all__ = [
    "DEFAULT_THREAD_LIMIT",
    "current_default_thread_limiter",
    "request_hop_limiter",
    "task_hop_limiter",
]

DEFAULT_THREAD_LIMIT = 40
"""How many sync background tasks may run in worker threads at once, per event loop."""

_default_limiter: RunVar[CapacityLimiter] = RunVar("afterward_default_thread_limiter")

# (afterward's limiter, AnyIO's default limiter, and the hop views of both) of one event loop
_Limiters = tuple[CapacityLimiter, CapacityLimiter, CapacityLimiter, CapacityLimiter]
_cached: tuple[weakref.ref[object], _Limiters] | None = None


def current_default_thread_limiter() -> CapacityLimiter:
    """Return the limiter sync background tasks use unless a collector is given its own.

    There is one per event loop, with `DEFAULT_THREAD_LIMIT` tokens. It is not AnyIO's default
    thread limiter, so slow sync tasks cannot starve sync endpoints and dependencies (Starlette
    and FastAPI run both on that one pool). Change its size with `.total_tokens = N` at startup.

    Returns:
        The event loop's `anyio.CapacityLimiter` for background tasks.
    """
    return _limiters()[0]


def task_hop_limiter(limiter: CapacityLimiter | None) -> CapacityLimiter:
    """Return the `limiter=` for a hop of sync tasks: under `limiter`, else afterward's."""
    return _limiters()[2] if limiter is None else _hop_view()(limiter)


def request_hop_limiter() -> CapacityLimiter:
    """Return the `limiter=` for a hop of a sync endpoint or dependency: AnyIO's default one."""
    return _limiters()[3]


def _current_loop() -> object | None:
    loop = events._get_running_loop()
    if loop is None and "trio" in sys.modules:
        try:
            token: object = sys.modules["trio"].lowlevel.current_trio_token()
        except RuntimeError:  # not in a trio run
            return None
        return token
    return loop


def _limiters() -> _Limiters:
    global _cached
    loop = _current_loop()
    cached = _cached  # read once: event loops in other threads may replace it meanwhile
    if loop is not None and cached is not None and cached[0]() is loop:
        return cached[1]
    try:
        ours = _default_limiter.get()
    except LookupError:
        ours = CapacityLimiter(DEFAULT_THREAD_LIMIT)
        _default_limiter.set(ours)
    anyios = to_thread.current_default_thread_limiter()
    view = _hop_view()
    limiters = ours, anyios, view(ours), view(anyios)
    if loop is not None:
        _cached = weakref.ref(loop), limiters
    return limiters


def _hop_view() -> Callable[[CapacityLimiter], CapacityLimiter]:
    # The views are passed where AnyIO expects a CapacityLimiter; each has what its backend uses.
    view = _PromptLimiter if events._get_running_loop() is not None else _PromptTrioLimiter
    return cast("Callable[[CapacityLimiter], CapacityLimiter]", view)


class _PromptLimiter:
    """A limiter's asyncio face for `to_thread.run_sync`: a free token is taken at once."""

    __slots__ = ("limiter",)

    def __init__(self, limiter: CapacityLimiter) -> None:
        self.limiter = limiter

    async def __aenter__(self) -> None:
        try:
            self.limiter.acquire_nowait()
        except Exception:  # WouldBlock, or a limiter that only knows acquire(): wait there
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
        except Exception:  # anyio's or trio's WouldBlock (a plain trio limiter works too)
            await self.limiter.acquire_on_behalf_of(borrower)

    def release_on_behalf_of(self, borrower: object) -> None:
        self.limiter.release_on_behalf_of(borrower)
