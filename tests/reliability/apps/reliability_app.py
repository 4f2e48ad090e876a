"""The app the reliability tests serve with a real `uvicorn` process: `uvicorn reliability_app:app`.

One app, three ways to get background tasks, chosen by the `MODE` environment variable:

- `inject`: plain Starlette, endpoints wrapped by `afterward.inject` (inline, no middleware);
- `fastapi`: FastAPI with the drop-in `afterward.fastapi.BackgroundTasks` (inline);
- `middleware`: plain Starlette under `afterward.BackgroundTasksMiddleware` (detached), endpoints
  reaching the request's collector with `current_tasks()`.

Every mode has the same routes. Tasks record what they did in the process (`/records` hands it to
the test, waiting until a number of records is there, on an event, never polling). The `afterward`
logger prints to stdout, one line per record, which the test reads.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import gc
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
from fastapi import Depends as FastAPIDepends
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

import afterward
from afterward import BackgroundTasks, BackgroundTasksMiddleware, Depends, current_tasks, inject
from afterward.fastapi import BackgroundTasks as DropIn

MODE = os.environ.get("MODE", "inject")
WORKERS = int(os.environ.get("WORKERS", "8"))
TASK_SECONDS = float(os.environ.get("TASK_SECONDS", "0.2"))
TIMEOUT = float(os.environ.get("TIMEOUT", "0.2"))  # the timeout policy of /fault/hangtimeout
WAIT = float(
    os.environ.get("WAIT", "20")
)  # the longest a `/records` call waits for what it expects

logging.basicConfig(
    stream=sys.stdout, level=logging.INFO, format="%(name)s %(levelname)s %(message)s"
)
_print_lock = threading.Lock()


def say(text: str) -> None:
    """Print one whole line (tasks in several threads print at once)."""
    with _print_lock:
        print(text, flush=True)


class Counter:
    """Things counted from any thread; an async caller waits until a count is reached."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._lock = threading.Lock()
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Event]] = []

    def add(self, item: str) -> None:
        with self._lock:
            self.items.append(item)
            count = len(self.items)
            ready = [waiter for waiter in self._waiters if waiter[0] <= count]
            for waiter in ready:
                self._waiters.remove(waiter)
        for _, loop, event in ready:
            loop.call_soon_threadsafe(event.set)

    async def wait(self, count: int, seconds: float) -> list[str]:
        event = asyncio.Event()
        with self._lock:
            if len(self.items) < count:
                self._waiters.append((count, asyncio.get_running_loop(), event))
            else:
                event.set()
        with anyio.move_on_after(seconds):
            await event.wait()
        with self._lock:
            return list(self.items)

    def reset(self) -> None:
        with self._lock:
            self.items = []


records = Counter()  # what tasks did: "request-id:index"
blocking = Counter()  # tasks now blocking their thread
release = threading.Event()  # lets the blocking tasks go
request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="-")
collectors: dict[str, BackgroundTasks] = {}  # /isolation: each request's collector, by id
stash: list[BackgroundTasks] = []  # /late: a collector kept after its request


# The tasks.


def record_sync(rid: str, index: int | str) -> None:
    records.add(f"{rid}:{index}")


async def record_async(rid: str, index: int | str) -> None:
    await anyio.lowlevel.checkpoint()
    records.add(f"{rid}:{index}")


def fail_sync(rid: str) -> None:
    raise RuntimeError(f"sync task of request {rid} failed on purpose")


async def fail_async(rid: str) -> None:
    raise RuntimeError(f"async task of request {rid} failed on purpose")


async def hang_async(rid: str) -> None:
    await anyio.sleep_forever()


attempts: collections.Counter[str] = collections.Counter()  # policy tasks' attempts, by request
_attempts_lock = threading.Lock()


def _attempt(rid: str) -> int:
    with _attempts_lock:
        attempts[rid] += 1
        return attempts[rid]


@afterward.task(retries=2, backoff=0.0, jitter=False)
def retried_sync(rid: str) -> None:
    """Fail the first two attempts, record each attempt and the success."""
    number = _attempt(f"{rid}:sync")
    records.add(f"{rid}:sync-attempt-{number}")
    if number <= 2:
        raise ConnectionError(f"attempt {number} of request {rid} failing on purpose")


@afterward.task(retries=2, backoff=0.01, jitter=False)
async def retried_async(rid: str) -> None:
    """The same, async (with a short backoff between attempts)."""
    await anyio.lowlevel.checkpoint()
    number = _attempt(f"{rid}:async")
    records.add(f"{rid}:async-attempt-{number}")
    if number <= 2:
        raise ConnectionError(f"attempt {number} of request {rid} failing on purpose")


def block_thread(rid: str) -> None:
    blocking.add(rid)
    release.wait()  # blocks its thread until the test says so (no timeout: "forever")
    records.add(f"{rid}:unblocked")


async def slow_async(rid: str) -> None:
    say(f"started slow_async {rid}")
    await anyio.sleep(TASK_SECONDS)
    say(f"finished slow_async {rid}")


def slow_sync(rid: str) -> None:
    say(f"started slow_sync {rid}")
    release.wait(TASK_SECONDS)
    say(f"finished slow_sync {rid}")


def quick(rid: str) -> None:
    say(f"finished quick {rid}")


def send_welcome(email: str, token: str) -> None:
    raise RuntimeError("the mail server refused the message")


def check_isolation(rid: str, value_seen_at_add: str, last: bool = False) -> None:
    seen = request_var.get()
    same = current_tasks() is (collectors.pop(rid) if last else collectors[rid])
    records.add(f"{rid}:{'ok' if seen == rid == value_seen_at_add and same else 'MIXED'}")


async def check_isolation_async(rid: str, value_seen_at_add: str) -> None:
    await anyio.lowlevel.checkpoint()  # let other requests' tasks run in between
    check_isolation(rid, value_seen_at_add, last=True)


# What each route queues, whatever the mode.


def queue_work(tasks: BackgroundTasks, rid: str) -> None:
    tasks.add_task(record_sync, rid, 0)
    tasks.add_task(record_async, rid, 1)
    tasks.add_task(record_sync, rid, 2)


def queue_fault(tasks: BackgroundTasks, kind: str, rid: str) -> None:
    if kind == "raise":
        tasks.add_task(fail_sync, rid)
        tasks.add_task(fail_async, rid)
    elif kind == "hang":
        tasks.add_task(hang_async, rid)
    elif kind == "hangtimeout":
        tasks.add_task(afterward.task(hang_async, timeout=TIMEOUT), rid)
    elif kind == "retry":
        tasks.add_task(retried_sync, rid)
        tasks.add_task(retried_async, rid)
    elif kind == "block":
        tasks.add_task(block_thread, rid)
    elif kind == "slow":
        tasks.add_task(slow_async, rid)
        tasks.add_task(slow_sync, rid)
        tasks.add_task(quick, rid)
    elif kind == "slowsync":
        tasks.add_task(slow_sync, rid)
        tasks.add_task(quick, rid)
    elif kind == "secret":
        tasks.add_task(send_welcome, f"{rid}@example.com", token=f"token-{rid}")
    else:
        raise ValueError(kind)
    tasks.add_task(record_sync, rid, "after")


def queue_isolation(tasks: BackgroundTasks, rid: str) -> None:
    request_var.set(rid)
    collectors[rid] = tasks
    tasks.add_task(check_isolation, rid, request_var.get())
    tasks.add_task(check_isolation_async, rid, request_var.get())


def late_add(tasks: BackgroundTasks, rid: str) -> str:
    """Keep this request's collector; add to the one a previous request kept."""
    tasks.add_task(record_sync, rid, "own")
    answer = "first"
    if stash:
        try:
            stash.pop().add_task(record_sync, rid, 0)
        except RuntimeError as exc:
            answer = f"refused: {exc}"
        else:
            answer = "accepted"
    stash.append(tasks)
    return answer


# Routes that need no collector.


async def records_route(request: Request) -> Response:
    counter = blocking if request.query_params.get("of") == "blocking" else records
    wait = float(request.query_params.get("wait", WAIT))
    items = await counter.wait(int(request.query_params.get("expect", "0")), wait)
    return JSONResponse({"count": len(items), "items": items, **limiter_figures()})


async def reset_route(request: Request) -> Response:
    records.reset()
    with _attempts_lock:
        attempts.clear()
    return JSONResponse({})


async def objects_route(request: Request) -> Response:
    """Live Python objects after a full collection, the most common types first."""
    gc.collect()
    counts = collections.Counter(type(obj).__name__ for obj in gc.get_objects())
    return JSONResponse({"objects": sum(counts.values()), "top": counts.most_common(12)})


async def threads_route(request: Request) -> Response:
    """How many threads have a name that starts with `prefix` (afterward names its own)."""
    prefix = request.query_params["prefix"]
    count = sum(thread.name.startswith(prefix) for thread in threading.enumerate())
    return JSONResponse({"count": count})


async def release_route(request: Request) -> Response:
    release.set()
    return JSONResponse({})


def limiter_figures() -> dict[str, Any]:
    """Threads borrowed now from AnyIO's default limiter (Starlette's and FastAPI's pool)."""
    limiter = anyio.to_thread.current_default_thread_limiter()
    return {
        "anyio_borrowed": limiter.borrowed_tokens,
        "anyio_total": limiter.total_tokens,
        "threads": threading.active_count(),
    }


def sync_dependency() -> str:
    return threading.current_thread().name


def sync_endpoint(thread: str = Depends(sync_dependency)) -> dict[str, Any]:
    return {"dependency_thread": thread, "endpoint_thread": threading.current_thread().name}


BIG_CHUNKS = 512  # of 64 KiB: 32 MiB, far more than the socket buffers hold
_CHUNK = b"x" * 65536


async def big_body() -> Any:
    """A streamed body: uvicorn's flow control holds each chunk until the client reads."""
    for _ in range(BIG_CHUNKS):
        yield _CHUNK


async def wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def first_chunk_then_wait() -> Any:
    yield b"first-chunk"
    await anyio.sleep_forever()  # until Starlette stops the stream: the client left


def queue_client(tasks: BackgroundTasks, rid: str) -> None:
    tasks.add_task(record_sync, rid, "task")


STATIC = [
    Route("/records", records_route),
    Route("/reset", reset_route),
    Route("/release", release_route),
    Route("/objects", objects_route),
    Route("/threads", threads_route),
]


def starlette_inject() -> Starlette:
    async def work(rid: str, background_tasks: BackgroundTasks) -> dict[str, str]:
        queue_work(background_tasks, rid)
        return {"rid": rid}

    async def fault(kind: str, rid: str, background_tasks: BackgroundTasks) -> dict[str, str]:
        queue_fault(background_tasks, kind, rid)
        return {"rid": rid}

    async def isolation(rid: str, background_tasks: BackgroundTasks) -> dict[str, str]:
        queue_isolation(background_tasks, rid)
        return {"rid": rid}

    async def late(rid: str, background_tasks: BackgroundTasks) -> dict[str, str]:
        return {"answer": late_add(background_tasks, rid)}

    async def before(rid: str, request: Request, background_tasks: BackgroundTasks) -> Response:
        records.add(f"{rid}:entered")
        await wait_for_disconnect(request)
        queue_client(background_tasks, rid)
        return JSONResponse({"rid": rid})

    async def stream(rid: str, background_tasks: BackgroundTasks) -> Response:
        records.add(f"{rid}:entered")
        queue_client(background_tasks, rid)
        return StreamingResponse(first_chunk_then_wait())

    async def big(rid: str, background_tasks: BackgroundTasks) -> Response:
        records.add(f"{rid}:entered")
        queue_client(background_tasks, rid)
        return StreamingResponse(big_body())

    routes = [
        Route("/before/{rid}", inject(before)),
        Route("/stream/{rid}", inject(stream)),
        Route("/big/{rid}", inject(big)),
        Route("/work/{rid}", inject(work)),
        Route("/fault/{kind}/{rid}", inject(fault)),
        Route("/isolation/{rid}", inject(isolation)),
        Route("/late/{rid}", inject(late)),
        Route("/sync", inject(sync_endpoint)),
    ]
    return Starlette(routes=[*STATIC, *routes])


def starlette_current_tasks() -> Starlette:
    def endpoint(queue: Callable[..., Any], *names: str) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            params = [request.path_params[name] for name in names]
            result = queue(current_tasks(), *params)
            return JSONResponse({"answer": result})

        return handle

    async def before(request: Request) -> Response:
        rid = request.path_params["rid"]
        records.add(f"{rid}:entered")
        await wait_for_disconnect(request)
        queue_client(current_tasks(), rid)
        return JSONResponse({"rid": rid})

    async def stream(request: Request) -> Response:
        rid = request.path_params["rid"]
        records.add(f"{rid}:entered")
        queue_client(current_tasks(), rid)
        return StreamingResponse(first_chunk_then_wait())

    async def big(request: Request) -> Response:
        rid = request.path_params["rid"]
        records.add(f"{rid}:entered")
        queue_client(current_tasks(), rid)
        return StreamingResponse(big_body())

    routes = [
        Route("/before/{rid}", before),
        Route("/stream/{rid}", stream),
        Route("/big/{rid}", big),
        Route("/work/{rid}", endpoint(queue_work, "rid")),
        Route("/fault/{kind}/{rid}", endpoint(queue_fault, "kind", "rid")),
        Route("/isolation/{rid}", endpoint(queue_isolation, "rid")),
        Route("/late/{rid}", endpoint(late_add, "rid")),
        Route("/sync", inject(sync_endpoint)),
    ]
    return Starlette(routes=[*STATIC, *routes])


def fastapi_app() -> ASGIApp:
    app = FastAPI()
    app.router.routes.extend(STATIC)

    @app.get("/work/{rid}")
    async def work(rid: str, background_tasks: DropIn) -> dict[str, str]:
        queue_work(background_tasks, rid)
        return {"rid": rid}

    @app.get("/fault/{kind}/{rid}")
    async def fault(kind: str, rid: str, background_tasks: DropIn) -> dict[str, str]:
        queue_fault(background_tasks, kind, rid)
        return {"rid": rid}

    @app.get("/isolation/{rid}")
    async def isolation(rid: str, background_tasks: DropIn) -> dict[str, str]:
        queue_isolation(background_tasks, rid)
        return {"rid": rid}

    @app.get("/late/{rid}")
    async def late(rid: str, background_tasks: DropIn) -> dict[str, str]:
        return {"answer": late_add(background_tasks, rid)}

    @app.get("/before/{rid}")
    async def before(rid: str, request: Request, background_tasks: DropIn) -> Response:
        records.add(f"{rid}:entered")
        await wait_for_disconnect(request)
        queue_client(background_tasks, rid)
        return JSONResponse({"rid": rid})

    @app.get("/stream/{rid}")
    async def stream(rid: str, background_tasks: DropIn) -> Response:
        records.add(f"{rid}:entered")
        queue_client(background_tasks, rid)
        return StreamingResponse(first_chunk_then_wait())

    @app.get("/big/{rid}")
    async def big(rid: str, background_tasks: DropIn) -> Response:
        records.add(f"{rid}:entered")
        queue_client(background_tasks, rid)
        return StreamingResponse(big_body())

    @app.get("/sync")
    def sync(thread: str = FastAPIDepends(sync_dependency)) -> dict[str, Any]:
        return {"dependency_thread": thread, "endpoint_thread": threading.current_thread().name}

    return app


def make_app(mode: str) -> ASGIApp:
    if mode == "inject":
        return starlette_inject()
    if mode == "fastapi":
        return fastapi_app()
    if mode == "middleware":
        return BackgroundTasksMiddleware(
            starlette_current_tasks(),
            workers=WORKERS,
            max_running=int(os.environ.get("MAX_RUNNING", "100")),
            drain_timeout=float(os.environ.get("DRAIN_TIMEOUT", "30")),
        )
    raise ValueError(f"unknown MODE {mode!r}")


app = make_app(MODE)
say(f"reliability_app MODE={MODE} afterward={afterward.__version__}")
