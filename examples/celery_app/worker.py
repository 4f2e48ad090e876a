"""The Celery app: the worker runs it, and the web app sends its tasks through it.

celery -A examples.celery_app.worker worker --loglevel=INFO
"""

from __future__ import annotations

import os

from celery import Celery

import afterward.celery

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

# `include` makes the worker import the modules that define the tasks: a worker only runs the
# afterward tasks of modules it has imported.
celery_app = Celery("celery_app", broker=REDIS_URL, include=["examples.celery_app.tasks"])
# Deployment settings (queues, time limits, broker options) from a module named by an environment
# variable, if one is set: CELERY_CONFIG_MODULE=myproject.celeryconfig.
celery_app.config_from_envvar("CELERY_CONFIG_MODULE", silent=True)

# The one call that lets this app's workers run afterward tasks (and nothing else).
afterward.celery.register(celery_app)
