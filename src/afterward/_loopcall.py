"""Call a function on an event loop from any thread, without waiting for it.

afterward's worker threads are its own, not AnyIO's, so `anyio.from_thread` cannot find the loop
from them. The loop is captured once, on the loop, and called back through its own thread-safe
entry point: `call_soon_threadsafe` on asyncio, `TrioToken.run_sync_soon` on trio. Nothing waits
for the result: a worker thread that hands something back to the loop goes straight on.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["LoopCaller"]


class LoopCaller:
    """The running event loop's thread-safe "call soon", captured on the loop."""

    __slots__ = ("_call",)

    def __init__(self, call: Callable[..., object]) -> None:
        self._call = call

    @classmethod
    def current(cls) -> LoopCaller:
        """Capture the event loop this is called on (asyncio or trio).

        Raises:
            RuntimeError: not called on an asyncio or trio event loop.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            # The callback runs in a copy of the loop side's context, where AnyIO and sniffio can
            # tell which event loop they are on (a bare callback's context would not say).
            context = contextvars.copy_context()
            sniffio = sys.modules.get("sniffio")
            if sniffio is not None:
                # With sniffio installed, AnyIO asks it which loop this is, and it can tell only
                # in a task or where this variable says so: a callback is not in a task, and a
                # loop that `anyio.run` did not start (uvicorn's) sets no variable.
                context.run(sniffio.current_async_library_cvar.set, "asyncio")
            return cls(functools.partial(loop.call_soon_threadsafe, context=context))
        trio = sys.modules.get("trio")
        if trio is not None:
            try:
                token = trio.lowlevel.current_trio_token()
            except RuntimeError:
                pass
            else:
                return cls(token.run_sync_soon)
        raise RuntimeError("LoopCaller.current() must be called on an asyncio or trio event loop.")

    def call_soon(self, func: Callable[..., object], *args: Any) -> bool:
        """Schedule `func(*args)` on the loop; return False if the loop has already closed."""
        try:
            self._call(func, *args)
        except RuntimeError:  # asyncio: "Event loop is closed"; trio: "run is finished"
            return False
        return True
