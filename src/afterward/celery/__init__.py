"""Scale out to Celery: `pip install afterward[celery]`.

Web side: `BackgroundTasksMiddleware(app, backend=CeleryBackend(celery_app))` sends every task
added with `add_task` to Celery workers instead of running it in the web process. Worker side:
`register(celery_app)` in the module that defines the Celery app, then `celery -A that_module
worker`. Only functions registered with afterward travel: `@afterward.task` at module level, or
`register_task(func)`. See the "Scaling out" page of the documentation.
"""

from __future__ import annotations

from ._backend import DEFAULT_RETRY_POLICY as DEFAULT_RETRY_POLICY
from ._backend import CeleryBackend as CeleryBackend
from ._registry import register_task as register_task
from ._worker import RUN_TASK as RUN_TASK
from ._worker import TIME_LIMIT_GRACE as TIME_LIMIT_GRACE
from ._worker import register as register

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "RUN_TASK",
    "TIME_LIMIT_GRACE",
    "CeleryBackend",
    "register",
    "register_task",
]
