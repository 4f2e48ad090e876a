"""afterward: dependable background tasks for ASGI frameworks.

`tasks.add_task(func, *args, **kwargs)` in a request handler runs `func` after the response has
been sent: sync functions in afterward's own worker threads, async functions on the event loop,
in order, each failure logged by name without stopping the others.
"""

from __future__ import annotations

from ._attach import attach as attach
from ._backend import Backend as Backend
from ._current import current_tasks as current_tasks
from ._events import TaskEvent as TaskEvent
from ._events import add_attempt_scope as add_attempt_scope
from ._events import on_event as on_event
from ._inject import inject as inject
from ._limiter import DEFAULT_THREAD_LIMIT as DEFAULT_THREAD_LIMIT
from ._limiter import current_default_thread_limiter as current_default_thread_limiter
from ._middleware import BackgroundTasksMiddleware as BackgroundTasksMiddleware
from ._middleware import RunWhen as RunWhen
from ._params import Depends as Depends
from ._policy import Task as Task
from ._policy import TaskPolicy as TaskPolicy
from ._policy import task as task
from ._stats import Stats as Stats
from ._stats import stats as stats
from ._tasks import BackgroundTask as BackgroundTask
from ._tasks import BackgroundTasks as BackgroundTasks
from ._tasks import ErrorCallback as ErrorCallback

__version__ = "0.1.1"

__all__ = [
    "DEFAULT_THREAD_LIMIT",
    "Backend",
    "BackgroundTask",
    "BackgroundTasks",
    "BackgroundTasksMiddleware",
    "Depends",
    "ErrorCallback",
    "RunWhen",
    "Stats",
    "Task",
    "TaskEvent",
    "TaskPolicy",
    "add_attempt_scope",
    "attach",
    "current_default_thread_limiter",
    "current_tasks",
    "inject",
    "on_event",
    "stats",
    "task",
]
