"""Helpers shared by the test files."""

from __future__ import annotations

import anyio
import anyio.lowlevel


async def wait_until_a_task_waits_for(limiter: anyio.CapacityLimiter) -> None:
    """Let the other tasks run until one of them is queued on `limiter` (no sleeping)."""
    with anyio.fail_after(5):
        while limiter.statistics().tasks_waiting == 0:
            await anyio.lowlevel.checkpoint()
