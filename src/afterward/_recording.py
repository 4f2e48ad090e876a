"""The switch that makes collectors record their tasks instead of running them (for tests).

`afterward.testing.record_tasks()` turns it on. Where a collector's tasks would start, a check
costs one global load when it is off: the runner's `run_tasks` (every inline run:
`BackgroundTasks.__call__`, the FastAPI drop-in, `inject` endpoints, `attach`, the middleware
without a lifespan), its `run_task` (one `BackgroundTask` run on its own, as a response's
`background=`), and the supervisor's hand-off (`try_submit`, `submit`: the middleware's
detached runs).

The switch is process-wide, not a context variable: Starlette's `TestClient` serves requests on
an event loop in a thread of its own, where a context variable set by the test would not be
seen; a request's collector would then run instead of being recorded. Nested recorders form a
stack: the innermost one records.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

__all__ = ["Recorder", "intercept", "intercept_task", "recorder", "start", "stop"]


class Recorder(Protocol):
    """What takes the tasks of a collector while recording is on."""

    def record_collector(self, collector: Any) -> None:
        """Take a collector's pending tasks (they are marked done in it), without running them."""

    def record_task(self, entry: Any) -> None:
        """Take one `afterward.BackgroundTask` run on its own (a response's `background=`)."""


recorder: Recorder | None = None
"""The active recorder, or None (the default: collectors run their tasks)."""

_stack: list[Recorder] = []
_lock = threading.Lock()


def start(new: Recorder) -> None:
    """Make `new` the active recorder, until `stop(new)`."""
    global recorder
    with _lock:
        _stack.append(new)
        recorder = new


def stop(old: Recorder) -> None:
    """Stop `old` recording; the recorder active before it (if any) records again."""
    global recorder
    with _lock:
        # Not necessarily the last one: two recorders opened in two threads may end in any order.
        for index in range(len(_stack) - 1, -1, -1):
            if _stack[index] is old:
                del _stack[index]
                break
        recorder = _stack[-1] if _stack else None


def intercept(collector: object) -> bool:
    """Give the collector's pending tasks to the active recorder; return whether it took them.

    Called only when `recorder` is set. A collector that replays recorded tasks (it has a true
    `_afterward_replay` attribute) is not intercepted: it runs.
    """
    current = recorder
    if current is None or getattr(collector, "_afterward_replay", False):
        return False
    current.record_collector(collector)
    return True


def intercept_task(entry: object) -> bool:
    """Give one task run on its own to the active recorder; return whether it took it."""
    current = recorder
    if current is None:
        return False
    current.record_task(entry)
    return True
