"""The web side of the Celery reliability tests: `uvicorn celery_web:app`, tasks sent to Celery.

Starlette under `BackgroundTasksMiddleware(backend=CeleryBackend(...))`, configured by the same
environment as the test workers (`tests/apps/celery_tasks.py`: broker, key prefix, queue). Each
`/work/{rid}?key=K` request queues three tasks (sync, async, sync) that record `rid:index` in the
Redis list `K` when a worker runs them; it prints `handled rid` first, so a test can act while
requests are in flight (kill this process) without sleeping. The `afterward` logger prints to
stdout, where the test reads the 503s' log lines.
"""

from __future__ import annotations

import logging
import sys

import celery_tasks
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import afterward
from afterward import BackgroundTasksMiddleware
from afterward.celery import CeleryBackend

logging.basicConfig(
    stream=sys.stdout, level=logging.INFO, format="%(name)s %(levelname)s %(message)s"
)


async def work(request: Request) -> Response:
    rid, key = request.path_params["rid"], request.query_params["key"]
    print(f"handled {rid}", flush=True)
    tasks = afterward.current_tasks()
    tasks.add_task(celery_tasks.record, key, f"{rid}:0")
    tasks.add_task(celery_tasks.arecord, key, f"{rid}:1")
    tasks.add_task(celery_tasks.record, key, f"{rid}:2")
    return JSONResponse({"rid": rid})


backend = CeleryBackend(celery_tasks.make_app())
app = BackgroundTasksMiddleware(Starlette(routes=[Route("/work/{rid}", work)]), backend=backend)
print(f"celery_web broker={celery_tasks.BROKER_URL} queue={celery_tasks.QUEUE}", flush=True)
