"""What the runner can execute itself: a checked call with the context captured for it.

The runner sits below the public classes and never imports them: it knows afterward's entries by
this base class, which `afterward.BackgroundTask` extends. Anything else in a collector (Starlette's
own tasks, a nested collector, any awaitable callable) is run as it runs itself, `await entry()`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import Context
from typing import Any, ClassVar

from ._handle import TaskHandle

__all__ = ["Call"]


class Call(TaskHandle):
    """`func(*args, **kwargs)`, checked when it was added, to run in `context`; its own handle.

    Attributes:
        func: The function to call.
        args: Positional arguments for `func`.
        kwargs: Keyword arguments for `func`.
        is_async: Whether `func` is awaited on the event loop (else it runs in a worker thread).
        name: `module.qualname` of `func`, used in logs.
        context: The `contextvars.Context` captured when the call was added. It is never entered
            itself: each run gets a copy, so one entry can run in several requests at once.
        runs_directly: The runner may call `func` itself, batching sync calls into one thread hop.
            False for a class that overrides `__call__`: the runner then awaits `entry()`, so
            the override is honoured.
    """

    func: Callable[..., Any]
    # A tuple and a dict; `Any` because Starlette's `BackgroundTask`, the other base of
    # afterward's, types them with the ParamSpec of its `__init__`.
    args: Any
    kwargs: Any
    is_async: bool
    name: str
    context: Context
    runs_directly: ClassVar[bool] = True
    # Written per entry when it is made (`_task._fill`): no policy, and `runs_directly`. The
    # runner then runs it on its fast path (an entry made otherwise takes the general one).
    _plain = False
