"""Driving a coroutine step by step inside a `contextvars.Context`, without a task of its own.

This is how an async task sees the context captured at `add_task`: each of its steps runs in (a
copy of) that context, and whatever it yields to the event loop is passed through untouched, so
it works on any AnyIO backend and cancellation reaches it as usual.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Generator
from contextvars import Context
from typing import Any

__all__ = ["DONE", "await_in_context", "resume"]

DONE: Any = object()
"""What `next(iterator, DONE)` returns for a coroutine that finished in that step."""


async def await_in_context(context: Context, awaitable: Awaitable[object]) -> None:
    """Await `awaitable` with each of its steps run inside `context`."""
    iterator = awaitable.__await__()
    yielded = context.run(next, iterator, DONE)
    if yielded is not DONE:
        await resume(context, iterator, yielded)


@types.coroutine
def resume(context: Context, iterator: Any, yielded: Any) -> Generator[Any, Any, None]:
    """Drive a suspended coroutine to its end, each step inside `context`.

    Cancellation is thrown into the coroutine, inside `context` as well.
    """
    while True:
        try:
            value = yield yielded
        except BaseException as exc:
            step, argument = iterator.throw, exc
        else:
            step, argument = iterator.send, value
        try:
            yielded = context.run(step, argument)
        except StopIteration:
            return
