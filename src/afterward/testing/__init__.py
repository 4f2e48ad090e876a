"""afterward.testing: look at background tasks in tests, run them on demand, wait for them.

- `record_tasks()`: inside the block, collectors record their tasks instead of running them;
  assert on what was queued, and `run()` them when the test wants their effect.
- `wait_idle(app)` / `wait_idle_sync(client)`: wait until `BackgroundTasksMiddleware` has run
  every task handed to it, instead of sleeping.
- `lifespan(app)`: run an app's lifespan around an HTTPX client, as a server would.

The pytest plugin (`afterward.testing.plugin`, registered by installing afterward) offers the
fixtures `afterward_recorder` and `afterward_wait_idle`.
"""

from __future__ import annotations

from ._idle import IdleWaiter as IdleWaiter
from ._idle import wait_idle as wait_idle
from ._idle import wait_idle_sync as wait_idle_sync
from ._lifespan import lifespan as lifespan
from ._recorder import RecordedTask as RecordedTask
from ._recorder import RecordingBackend as RecordingBackend
from ._recorder import record_tasks as record_tasks

__all__ = [
    "IdleWaiter",
    "RecordedTask",
    "RecordingBackend",
    "lifespan",
    "record_tasks",
    "wait_idle",
    "wait_idle_sync",
]
