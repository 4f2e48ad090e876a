"""The apps of the end-to-end benchmark, each served by its own uvicorn process.

`python -m benchmarks.e2e_apps VARIANT [--loop uvloop] [--http httptools]` binds a socket on
127.0.0.1 (a free port), prints the port on its first line of output, and serves the variant's app
with uvicorn until SIGTERM or SIGINT. `benchmarks/e2e.py` starts one such process per variant.

Every app serves `POST /send-notification/{email}` (the route of FastAPI's "Background Tasks"
chapter, the seed of this project) with the body `{"message":"Message sent"}`, and `GET /count`,
which answers `{"requests": R, "tasks": T, "in_workers": W}`: how many benchmarked requests the
endpoint has handled and how many background tasks have run since the process started, W of them
in afterward's worker threads (so the harness can tell a detached run from an inline one). Every
endpoint counts its request, every task counts itself: the harness checks that
`T == R x tasks_per_request` after each round, and that R matches the 2xx responses wrk received.

The counters are `itertools.count` objects: `next()` on one is a single C call under the GIL, so
tasks in several worker threads never lose an increment, at no measurable cost.
"""

from __future__ import annotations

import argparse
import itertools
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, cast

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from starlette.applications import Starlette
from starlette.background import BackgroundTasks as StarletteBackgroundTasks
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from afterward import BackgroundTasks, BackgroundTasksMiddleware, Depends, current_tasks, inject

__all__ = [
    "BODY",
    "EMAIL",
    "PATH",
    "QUERY",
    "VARIANTS",
    "AppVariant",
    "counted",
    "main",
]

ROUTE = "/send-notification/{email}"
EMAIL = "alice@example.com"
QUERY = "hello"
PATH = f"/send-notification/{EMAIL}?q={QUERY}"
"""The request wrk sends (POST, no body) to every variant."""

BODY = {"message": "Message sent"}
EXPECTED_BODY = b'{"message":"Message sent"}'

REQUESTS = itertools.count()
TASKS = itertools.count()
IN_WORKERS = itertools.count()
"""Sync tasks that ran in one of afterward's own worker threads (detached mode)."""

AFTERWARD_WORKER = "afterward-worker"


def counted(counter: itertools.count[int]) -> int:
    """Return how many times `next()` has been called on `counter` (it starts at 0).

    `repr(itertools.count())` shows the next value, `count(N)`; reading it does not increment.
    """
    text = repr(counter)
    return int(text[len("count(") : -1])


def _count_sync() -> None:
    next(TASKS)
    if threading.current_thread().name.startswith(AFTERWARD_WORKER):
        next(IN_WORKERS)


def record_sync(message: str) -> None:
    """A sync background task."""
    _count_sync()


async def record_async(message: str) -> None:
    """An async background task."""
    next(TASKS)


def write_log(message: str) -> None:
    """The seed's task, counting instead of appending to log.txt."""
    _count_sync()


def count_payload() -> dict[str, int]:
    """The body of `GET /count`."""
    return {
        "requests": counted(REQUESTS),
        "tasks": counted(TASKS),
        "in_workers": counted(IN_WORKERS),
    }


async def starlette_count(request: Request) -> Response:
    """`GET /count` for the Starlette-based apps."""
    return JSONResponse(count_payload())


def _starlette(endpoint: Callable[..., Any]) -> Starlette:
    return Starlette(
        routes=[
            Route(ROUTE, endpoint, methods=["POST"]),
            Route("/count", starlette_count, methods=["GET"]),
        ]
    )


# --- hand-written Starlette ---------------------------------------------------------------------


def starlette_app(task: Callable[[str], object] | None, count: int) -> ASGIApp:
    """A hand-written Starlette endpoint queueing `task` `count` times (none if `task` is None)."""

    async def send_notification(request: Request) -> Response:
        next(REQUESTS)
        email = request.path_params["email"]
        if task is None:
            return JSONResponse(BODY)
        background_tasks = StarletteBackgroundTasks()
        message = f"message to {email}\n"
        for _ in range(count):
            background_tasks.add_task(task, message)
        return JSONResponse(BODY, background=background_tasks)

    return _starlette(send_notification)


def _get_query_starlette(
    background_tasks: StarletteBackgroundTasks, q: str | None = None
) -> str | None:
    if q:
        background_tasks.add_task(write_log, f"found query: {q}\n")
    return q


async def _seed_starlette(request: Request) -> Response:
    next(REQUESTS)
    email = request.path_params["email"]
    background_tasks = StarletteBackgroundTasks()
    _get_query_starlette(background_tasks, request.query_params.get("q"))
    background_tasks.add_task(write_log, f"message to {email}\n")
    return JSONResponse(BODY, background=background_tasks)


# --- afterward: inject endpoints, plain endpoints with current_tasks() --------------------------


def inject_app(task: Callable[[str], object] | None, count: int) -> Starlette:
    """The same endpoint as `starlette_app`, written as a typed function wrapped in `inject`."""

    async def send_notification(email: str, background_tasks: BackgroundTasks) -> dict[str, str]:
        next(REQUESTS)
        message = f"message to {email}\n"
        if task is not None:
            for _ in range(count):
                background_tasks.add_task(task, message)
        return BODY

    return _starlette(inject(send_notification))


def _get_query(background_tasks: BackgroundTasks, q: str | None = None) -> str | None:
    # The seed's sync dependency: inject runs it in a worker thread, as FastAPI does.
    if q:
        background_tasks.add_task(write_log, f"found query: {q}\n")
    return q


async def _seed_inject(
    email: str, background_tasks: BackgroundTasks, q: Annotated[str, Depends(_get_query)]
) -> dict[str, str]:
    next(REQUESTS)
    background_tasks.add_task(write_log, f"message to {email}\n")
    return BODY


async def _plain_current_tasks(request: Request) -> Response:
    next(REQUESTS)
    email = request.path_params["email"]
    current_tasks().add_task(record_sync, f"message to {email}\n")
    return JSONResponse(BODY)


def detached(app: ASGIApp) -> ASGIApp:
    """`app` under `BackgroundTasksMiddleware` with its defaults."""
    return BackgroundTasksMiddleware(app)


# --- Litestar, the peer -------------------------------------------------------------------------


def litestar_app(seed: bool) -> ASGIApp:
    """Litestar serving one sync task per request, or the seed's dependency example.

    Litestar has no collector to inject, so the seed's dependency takes the request's
    `BackgroundTasks` as a dependency of its own (resolved once per request, so the handler gets
    the same object). The sync
    dependencies are declared `sync_to_thread=False` (run inline, the cheaper choice a Litestar
    user makes for trivial functions); Litestar runs each sync task with `loop.run_in_executor`.
    """
    from litestar import Litestar, get, post
    from litestar import Response as LitestarResponse
    from litestar.background_tasks import BackgroundTask, BackgroundTasks
    from litestar.di import NamedDependency, Provide
    from litestar.params import FromPath, FromQuery

    def task_list() -> BackgroundTasks:
        # A list of its own: Litestar validates a `list` parameter into a copy.
        return BackgroundTasks([])

    def get_query(
        tasks: NamedDependency[BackgroundTasks], q: FromQuery[str | None] = None
    ) -> str | None:
        if q:
            cast("list[BackgroundTask]", tasks.tasks).append(
                BackgroundTask(write_log, f"found query: {q}\n")
            )
        return q

    @post("/send-notification/{email:str}", status_code=200)
    async def send_one(email: FromPath[str]) -> LitestarResponse[dict[str, str]]:
        next(REQUESTS)
        task = BackgroundTask(record_sync, f"message to {email}\n")
        return LitestarResponse(BODY, background=task)

    @post(
        "/send-notification/{email:str}",
        status_code=200,
        dependencies={
            "tasks": Provide(task_list, sync_to_thread=False),
            "found": Provide(get_query, sync_to_thread=False),
        },
    )
    async def send_seed(
        email: FromPath[str],
        tasks: NamedDependency[BackgroundTasks],
        found: NamedDependency[str | None],
    ) -> LitestarResponse[dict[str, str]]:
        next(REQUESTS)
        cast("list[BackgroundTask]", tasks.tasks).append(
            BackgroundTask(write_log, f"message to {email}\n")
        )
        return LitestarResponse(BODY, background=tasks)

    @get("/count")
    async def count() -> dict[str, int]:
        return count_payload()

    app = Litestar(
        route_handlers=[send_seed if seed else send_one, count],
        # Leave logging alone, as the other apps do: by default Litestar configures the root
        # logger at startup.
        logging_config=None,
        # The annotations are strings (postponed evaluation); these names are local to this
        # function so that Litestar is imported only by its own servers.
        signature_namespace={
            "LitestarResponse": LitestarResponse,
            "BackgroundTask": BackgroundTask,
            "BackgroundTasks": BackgroundTasks,
            "FromPath": FromPath,
            "FromQuery": FromQuery,
            "NamedDependency": NamedDependency,
        },
    )
    # Litestar types its ASGI callable with its own, narrower message types.
    return cast("ASGIApp", app)


# --- the variants -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppVariant:
    """One benchmarked server.

    Attributes:
        name: Its name on the command line and in the tables.
        tasks: Background tasks each request adds.
        scenario: What the request does (`none`, `async`, `sync`, `sync10`, `seed`); the
            hand-written Starlette variant of the same scenario is the tables' baseline.
        description: A line for the table.
        build: Makes the ASGI app (in the server process only).
    """

    name: str
    tasks: int
    scenario: str
    description: str
    build: Callable[[], ASGIApp]

    @property
    def detached(self) -> bool:
        """Whether its sync tasks must run in afterward's worker threads (the middleware's)."""
        return self.name.startswith("detached-")


VARIANTS: dict[str, AppVariant] = {
    v.name: v
    for v in (
        AppVariant(
            "starlette-none", 0, "none", "Starlette, no task", lambda: starlette_app(None, 0)
        ),
        AppVariant(
            "inline-none", 0, "none", "afterward inject, no task", lambda: inject_app(None, 0)
        ),
        AppVariant(
            "detached-none",
            0,
            "none",
            "middleware around starlette-none, no task",
            lambda: detached(starlette_app(None, 0)),
        ),
        AppVariant(
            "starlette-async",
            1,
            "async",
            "Starlette, 1 async task",
            lambda: starlette_app(record_async, 1),
        ),
        AppVariant(
            "inline-async",
            1,
            "async",
            "afterward inject, 1 async task",
            lambda: inject_app(record_async, 1),
        ),
        AppVariant(
            "starlette-sync",
            1,
            "sync",
            "Starlette, 1 sync task",
            lambda: starlette_app(record_sync, 1),
        ),
        AppVariant(
            "inline-sync",
            1,
            "sync",
            "afterward inject, 1 sync task",
            lambda: inject_app(record_sync, 1),
        ),
        AppVariant(
            "litestar-sync",
            1,
            "sync",
            "Litestar, 1 sync task",
            lambda: litestar_app(seed=False),
        ),
        AppVariant(
            "detached-sync",
            1,
            "sync",
            "middleware, inject endpoint, 1 sync task",
            lambda: detached(inject_app(record_sync, 1)),
        ),
        AppVariant(
            "detached-sync-plain",
            1,
            "sync",
            "middleware, plain endpoint + current_tasks(), 1 sync task",
            lambda: detached(_starlette(_plain_current_tasks)),
        ),
        AppVariant(
            "starlette-sync10",
            10,
            "sync10",
            "Starlette, 10 sync tasks",
            lambda: starlette_app(record_sync, 10),
        ),
        AppVariant(
            "detached-sync10",
            10,
            "sync10",
            "middleware, inject endpoint, 10 sync tasks",
            lambda: detached(inject_app(record_sync, 10)),
        ),
        AppVariant(
            "starlette-seed",
            2,
            "seed",
            "Starlette, seed example (dependency called inline)",
            lambda: _starlette(_seed_starlette),
        ),
        AppVariant(
            "inline-seed",
            2,
            "seed",
            "afterward inject, seed example",
            lambda: _starlette(inject(_seed_inject)),
        ),
        AppVariant(
            "litestar-seed",
            2,
            "seed",
            "Litestar, seed example",
            lambda: litestar_app(seed=True),
        ),
        AppVariant(
            "detached-seed",
            2,
            "seed",
            "middleware, inject, seed example",
            lambda: detached(_starlette(inject(_seed_inject))),
        ),
    )
}
"""Every variant, in table order, grouped by scenario: in the interleaved rounds a variant is
measured next to the ones it is compared with. The scenario's Starlette variant is
`starlette-<scenario>`, the tables' baseline."""


def main(argv: Sequence[str] | None = None) -> None:
    """Serve one variant on a free port of 127.0.0.1; print the port first."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.e2e_apps")
    parser.add_argument("variant", choices=list(VARIANTS))
    parser.add_argument("--loop", default="uvloop")
    parser.add_argument("--http", default="httptools")
    args = parser.parse_args(argv)

    import uvicorn

    app = VARIANTS[args.variant].build()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        loop=args.loop,
        http=args.http,
        lifespan="on",
        log_level="warning",
        access_log=False,
        backlog=2048,
    )
    server = uvicorn.Server(config)
    print(sock.getsockname()[1], flush=True)
    # uvicorn installs its own SIGTERM/SIGINT handlers once serving; until then, exit at once.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
