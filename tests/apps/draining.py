"""An app for the SIGTERM tests: run it with `uvicorn draining:app` (see test_middleware_e2e).

Each request to /work?n=N queues an async task and a sync task that each take TASK_SECONDS, then
a quick one. Every task prints when it starts and ends, and the afterward logger prints to stdout,
so the test reads what happened from the process's output.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from afterward import BackgroundTasksMiddleware, current_tasks

TASK_SECONDS = float(os.environ["TASK_SECONDS"])
logging.basicConfig(
    stream=sys.stdout, level=logging.INFO, format="%(name)s %(levelname)s %(message)s"
)


async def slow_async(n: int) -> None:
    print(f"started slow_async {n}", flush=True)
    await anyio.sleep(TASK_SECONDS)
    print(f"finished slow_async {n}", flush=True)


def slow_sync(n: int) -> None:
    print(f"started slow_sync {n}", flush=True)
    time.sleep(TASK_SECONDS)
    print(f"finished slow_sync {n}", flush=True)


def quick(n: int) -> None:
    print(f"finished quick {n}", flush=True)


async def work(request: Request) -> Response:
    n = int(request.query_params["n"])
    tasks = current_tasks()
    tasks.add_task(slow_async, n)
    tasks.add_task(slow_sync, n)
    tasks.add_task(quick, n)
    return PlainTextResponse(f"queued {n}")


app = BackgroundTasksMiddleware(
    Starlette(routes=[Route("/work", work)]),
    drain_timeout=float(os.environ["DRAIN_TIMEOUT"]),
    max_running=2,
    workers=2,
)
