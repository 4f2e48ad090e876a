"""An app for the SIGTERM tests: run it with `uvicorn draining:app` (see test_middleware_e2e).

Each request to /work?n=N queues an async task and a sync task that each take TASK_SECONDS, then
a quick one. Every task prints when it starts and ends, and the afterward logger prints to stdout,
so the test reads what happened from the process's output.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from afterward import BackgroundTasksMiddleware, current_tasks

TASK_SECONDS = float(os.environ["TASK_SECONDS"])
_print_lock = threading.Lock()


def say(text: str) -> None:
    """Print one whole line: tasks in several threads print at once."""
    with _print_lock:
        print(text, flush=True)


logging.basicConfig(
    stream=sys.stdout, level=logging.INFO, format="%(name)s %(levelname)s %(message)s"
)


async def slow_async(n: int) -> None:
    say(f"started slow_async {n}")
    await anyio.sleep(TASK_SECONDS)
    say(f"finished slow_async {n}")


def slow_sync(n: int) -> None:
    say(f"started slow_sync {n}")
    time.sleep(TASK_SECONDS)
    say(f"finished slow_sync {n}")


def quick(n: int) -> None:
    say(f"finished quick {n}")


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
