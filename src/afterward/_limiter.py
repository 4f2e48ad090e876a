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

import weakref
from typing import NamedTuple

from anyio import CapacityLimiter, to_thread
from anyio.lowlevel import RunVar

from ._anyio_seam import current_loop, prompt_limiter

__all__ = [
    "DEFAULT_THREAD_LIMIT",
    "current_default_thread_limiter",
    "request_hop_limiter",
    "task_hop_limiter",
]

DEFAULT_THREAD_LIMIT = 40
"""How many sync background tasks may run in worker threads at once, per event loop."""

_default_limiter: RunVar[CapacityLimiter] = RunVar("afterward_default_thread_limiter")


class _Limiters(NamedTuple):
    """The limiters of one event loop, and the prompt views the thread hops are given."""

    tasks: CapacityLimiter  # afterward's own, for sync background tasks
    tasks_hop: CapacityLimiter
    requests_hop: CapacityLimiter  # AnyIO's default, for sync endpoints and dependencies


_cached: tuple[weakref.ref[object], _Limiters] | None = None


def current_default_thread_limiter() -> CapacityLimiter:
    """Return the limiter sync background tasks use unless a collector is given its own.

    There is one per event loop, with `DEFAULT_THREAD_LIMIT` tokens. It is not AnyIO's default
    thread limiter, so slow sync tasks cannot starve sync endpoints and dependencies (Starlette
    and FastAPI run both on that one pool). Change its size with `.total_tokens = N` at startup.

    Returns:
        The event loop's `anyio.CapacityLimiter` for background tasks.
    """
    return _limiters().tasks


def task_hop_limiter(limiter: CapacityLimiter | None) -> CapacityLimiter:
    """Return the `limiter=` for a hop of sync tasks: under `limiter`, else afterward's."""
    return _limiters().tasks_hop if limiter is None else prompt_limiter(limiter)


def request_hop_limiter() -> CapacityLimiter:
    """Return the `limiter=` for a hop of a sync endpoint or dependency: AnyIO's default one."""
    return _limiters().requests_hop


def _limiters() -> _Limiters:
    global _cached
    loop = current_loop()
    cached = _cached  # read once: event loops in other threads may replace it meanwhile
    if loop is not None and cached is not None and cached[0]() is loop:
        return cached[1]
    try:
        ours = _default_limiter.get()
    except LookupError:
        ours = CapacityLimiter(DEFAULT_THREAD_LIMIT)
        _default_limiter.set(ours)
    anyios = to_thread.current_default_thread_limiter()
    limiters = _Limiters(ours, prompt_limiter(ours), prompt_limiter(anyios))
    if loop is not None:
        _cached = weakref.ref(loop), limiters
    return limiters
