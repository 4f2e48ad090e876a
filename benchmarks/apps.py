"""The benchmarked apps: each scenario written four ways that do the same work.

Every app serves `POST /send-notification/{email}` (the seed's route), answers 200 with the body
`{"message":"Message sent"}`, and queues the same tasks with the same messages:

- `starlette`: a hand-written Starlette endpoint, `JSONResponse(..., background=BackgroundTasks)`
  with `starlette.background.BackgroundTasks`, reading `request.path_params` itself;
- `afterward`: the endpoint written as a typed function and wrapped with `afterward.inject`;
- `fastapi`: the FastAPI path operation with `fastapi.BackgroundTasks`, in a default `FastAPI()`;
- `bare`: a plain ASGI callable doing the same work by hand (async tasks awaited in turn, sync
  tasks in one thread hop) -- a floor for context, with no target;
- `afterward detached`: the `afterward` app under `afterward.BackgroundTasksMiddleware`, so its
  tasks run detached, in the middleware's supervisor (in every scenario);
- `current_tasks detached`: a plain Starlette endpoint queueing its task on `current_tasks()`,
  under the middleware (one sync task only).

The tasks append to `EXECUTED` instead of writing `log.txt`, so file I/O does not drown the
differences being measured; the harness counts what they appended.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, cast
from urllib.parse import parse_qsl

import anyio
from fastapi import BackgroundTasks as FastAPIBackgroundTasks
from fastapi import Depends as FastAPIDepends
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.background import BackgroundTasks as StarletteBackgroundTasks
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from afterward import BackgroundTasks, BackgroundTasksMiddleware, Depends, current_tasks, inject

from .harness import HttpRequest, Scenario
from .results import Target

__all__ = ["DETACHED_VARIANTS", "EMAIL", "EXECUTED", "QUERY", "REQUEST", "VARIANTS", "scenarios"]

PATH = "/send-notification/{email}"
EMAIL = "alice@example.com"
QUERY = "hello"
REQUEST = HttpRequest("POST", f"/send-notification/{EMAIL}", f"q={QUERY}".encode())
"""The one request every variant of every scenario answers."""

BODY = {"message": "Message sent"}
EXPECTED_BODY = b'{"message":"Message sent"}'
VARIANTS = ("starlette", "afterward", "fastapi", "bare")
"""The inline variants, in every scenario and in this order."""
DETACHED = "afterward detached"
CURRENT_TASKS = "current_tasks detached"
DETACHED_VARIANTS = (DETACHED, CURRENT_TASKS)
"""The detached variants (under `BackgroundTasksMiddleware`), after the inline ones."""

EXECUTED: list[str] = []
"""What the tasks did: each appends its message here."""

Task = Callable[[str], object]


async def record_async(message: str) -> None:
    """An async task."""
    EXECUTED.append(message)


def record_sync(message: str) -> None:
    """A sync task (run in a worker thread by every variant)."""
    EXECUTED.append(message)


def write_log(message: str) -> None:
    """The seed's task, appending to memory instead of to log.txt."""
    EXECUTED.append(message)


# --- no task: the endpoint alone ---------------------------------------------------------------


async def _no_task_starlette(request: Request) -> Response:
    email = request.path_params["email"]
    _ = f"message to {email}\n"  # the same work as the other scenarios, minus the task
    return JSONResponse(BODY)


async def _no_task_afterward(email: str) -> dict[str, str]:
    _ = f"message to {email}\n"
    return BODY


def _no_task_fastapi() -> ASGIApp:
    app = FastAPI()

    @app.post(PATH, response_model=None)
    async def send_notification(email: str) -> dict[str, str]:
        _ = f"message to {email}\n"
        return BODY

    return app


async def _no_task_bare(scope: Scope, receive: Receive, send: Send) -> None:
    _ = f"message to {_email_from(scope)}\n"
    await _send_json(send, BODY)


# --- 1 or 10 tasks, async or sync ---------------------------------------------------------------


def starlette_tasks_app(task: Task, count: int) -> ASGIApp:
    """Return the hand-written Starlette app that queues `task` `count` times."""

    async def send_notification(request: Request) -> Response:
        email = request.path_params["email"]
        background_tasks = StarletteBackgroundTasks()
        message = f"message to {email}\n"
        for _ in range(count):
            background_tasks.add_task(task, message)
        return JSONResponse(BODY, background=background_tasks)

    return Starlette(routes=[Route(PATH, send_notification, methods=["POST"])])


def afterward_tasks_app(task: Task, count: int) -> ASGIApp:
    """Return the `inject` app that queues `task` `count` times."""

    async def send_notification(email: str, background_tasks: BackgroundTasks) -> dict[str, str]:
        message = f"message to {email}\n"
        for _ in range(count):
            background_tasks.add_task(task, message)
        return BODY

    return Starlette(routes=[Route(PATH, inject(send_notification), methods=["POST"])])


async def _current_tasks_sync(request: Request) -> Response:
    """A plain Starlette endpoint queueing one sync task on the middleware's collector."""
    email = request.path_params["email"]
    current_tasks().add_task(record_sync, f"message to {email}\n")
    return JSONResponse(BODY)


def detached(app: ASGIApp) -> BackgroundTasksMiddleware:
    """Return `app` under `BackgroundTasksMiddleware` with its defaults (as a user installs it)."""
    return BackgroundTasksMiddleware(app)


def fastapi_tasks_app(task: Task, count: int) -> ASGIApp:
    """Return the FastAPI app that queues `task` `count` times."""
    app = FastAPI()

    # response_model=None: the seed's path operations have no return annotation, so FastAPI does
    # not validate what they return; ours is annotated only for mypy.
    @app.post(PATH, response_model=None)
    async def send_notification(
        email: str, background_tasks: FastAPIBackgroundTasks
    ) -> dict[str, str]:
        message = f"message to {email}\n"
        for _ in range(count):
            background_tasks.add_task(task, message)
        return BODY

    return app


def bare_tasks_app(task: Task, count: int) -> ASGIApp:
    """Return a plain ASGI app doing the same: async tasks in turn, sync ones in one hop."""
    async_task = cast("Callable[[str], Awaitable[None]]", task)
    is_async = inspect.iscoroutinefunction(task)

    def run_all(message: str) -> None:
        for _ in range(count):
            task(message)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        email = _email_from(scope)
        message = f"message to {email}\n"
        await _send_json(send, BODY)
        if is_async:
            for _ in range(count):
                await async_task(message)
        else:
            await anyio.to_thread.run_sync(run_all, message)

    return app


# --- the seed's dependency example --------------------------------------------------------------


def get_query_starlette(
    background_tasks: StarletteBackgroundTasks, q: str | None = None
) -> str | None:
    """The seed's dependency, called inline by the hand-written Starlette endpoint."""
    if q:
        message = f"found query: {q}\n"
        background_tasks.add_task(write_log, message)
    return q


async def send_notification_starlette(request: Request) -> Response:
    """The seed's endpoint as a plain Starlette user writes it."""
    email = request.path_params["email"]
    background_tasks = StarletteBackgroundTasks()
    get_query_starlette(background_tasks, request.query_params.get("q"))
    message = f"message to {email}\n"
    background_tasks.add_task(write_log, message)
    return JSONResponse(BODY, background=background_tasks)


def get_query(background_tasks: BackgroundTasks, q: str | None = None) -> str | None:
    """The seed's dependency, unchanged but for the import of `BackgroundTasks`."""
    if q:
        message = f"found query: {q}\n"
        background_tasks.add_task(write_log, message)
    return q


async def send_notification(
    email: str, background_tasks: BackgroundTasks, q: Annotated[str, Depends(get_query)]
) -> dict[str, str]:
    """The seed's endpoint, unchanged but for the imports (and a return annotation)."""
    message = f"message to {email}\n"
    background_tasks.add_task(write_log, message)
    return BODY


def get_query_fastapi(background_tasks: FastAPIBackgroundTasks, q: str | None = None) -> str | None:
    """The seed's dependency, verbatim."""
    if q:
        message = f"found query: {q}\n"
        background_tasks.add_task(write_log, message)
    return q


async def send_notification_fastapi(
    email: str,
    background_tasks: FastAPIBackgroundTasks,
    q: Annotated[str, FastAPIDepends(get_query_fastapi)],
) -> dict[str, str]:
    """The seed's path operation, verbatim (plus a return annotation)."""
    message = f"message to {email}\n"
    background_tasks.add_task(write_log, message)
    return BODY


def _fastapi_seed_app() -> ASGIApp:
    app = FastAPI()
    app.post(PATH, response_model=None)(send_notification_fastapi)
    return app


async def _bare_seed_app(scope: Scope, receive: Receive, send: Send) -> None:
    email = _email_from(scope)
    q = dict(parse_qsl(scope["query_string"].decode("latin-1"))).get("q")
    messages = [f"found query: {q}\n"] if q else []
    messages.append(f"message to {email}\n")
    await _send_json(send, BODY)
    await anyio.to_thread.run_sync(_write_logs, messages)


def _write_logs(messages: list[str]) -> None:
    for message in messages:
        write_log(message)


# --- helpers of the bare variant ----------------------------------------------------------------

_PREFIX = PATH.partition("{")[0]


def _email_from(scope: Scope) -> str:
    path: str = scope["path"]
    if scope["method"] != "POST" or not path.startswith(_PREFIX) or "/" in path[len(_PREFIX) :]:
        raise LookupError(f"the bare app only serves POST {PATH}, not {scope['method']} {path}")
    return path[len(_PREFIX) :]


async def _send_json(send: Send, content: object) -> None:
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-length", str(len(body)).encode()),
                (b"content-type", b"application/json"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# --- the scenarios ------------------------------------------------------------------------------


def _tasks_scenario(
    name: str, task: Task, count: int, requests: int, targets: tuple[Target, ...]
) -> Scenario:
    apps: dict[str, ASGIApp] = {
        "starlette": starlette_tasks_app(task, count),
        "afterward": afterward_tasks_app(task, count),
        "fastapi": fastapi_tasks_app(task, count),
        "bare": bare_tasks_app(task, count),
        DETACHED: detached(afterward_tasks_app(task, count)),
    }
    if task is record_sync and count == 1:
        apps[CURRENT_TASKS] = detached(
            Starlette(routes=[Route(PATH, _current_tasks_sync, methods=["POST"])])
        )
    return Scenario(
        name=name,
        apps=apps,
        request=REQUEST,
        expected_body=EXPECTED_BODY,
        messages=(f"message to {EMAIL}\n",) * count,
        executed=EXECUTED,
        requests=requests,
        targets=targets,
        detached=frozenset(apps) & frozenset(DETACHED_VARIANTS),
    )


def scenarios() -> list[Scenario]:
    """Return the benchmark's scenarios with their targets, apps built afresh.

    The targets are afterward 0.1's, raised to 1.0x Starlette for no task and for async tasks
    by 0.1.1 (issue 5, part 6). The detached variants (0.2, issue 6) have one: with no task, the
    middleware costs at most 5 % against the same `inject` app without it. Their speed with
    tasks is judged end to end through uvicorn (`e2e.py`), not here.

    Requests per round are sized so that one turn of the interleaving (a round of each variant)
    takes about 0.1 s: short rounds, many of them, give the steadiest ratios.
    """
    return [
        Scenario(
            name="no task",
            apps={
                "starlette": Starlette(routes=[Route(PATH, _no_task_starlette, methods=["POST"])]),
                "afterward": Starlette(
                    routes=[Route(PATH, inject(_no_task_afterward), methods=["POST"])]
                ),
                "fastapi": _no_task_fastapi(),
                "bare": _no_task_bare,
                DETACHED: detached(
                    Starlette(routes=[Route(PATH, inject(_no_task_afterward), methods=["POST"])])
                ),
            },
            request=REQUEST,
            expected_body=EXPECTED_BODY,
            messages=(),
            executed=EXECUTED,
            requests=600,
            targets=(Target("afterward", "starlette", 1.0), Target(DETACHED, "afterward", 0.95)),
            detached=frozenset({DETACHED}),
        ),
        _tasks_scenario(
            "1 async task",
            record_async,
            1,
            requests=500,
            targets=(Target("afterward", "starlette", 1.0), Target("afterward", "fastapi", 3.0)),
        ),
        _tasks_scenario(
            "10 async tasks",
            record_async,
            10,
            requests=400,
            targets=(Target("afterward", "starlette", 1.0),),
        ),
        _tasks_scenario(
            "1 sync task",
            record_sync,
            1,
            requests=250,
            targets=(Target("afterward", "starlette", 1.0),),
        ),
        _tasks_scenario(
            "10 sync tasks",
            record_sync,
            10,
            requests=75,
            targets=(Target("afterward", "starlette", 5.0),),
        ),
        Scenario(
            name="seed example",
            apps={
                "starlette": Starlette(
                    routes=[Route(PATH, send_notification_starlette, methods=["POST"])]
                ),
                "afterward": Starlette(
                    routes=[Route(PATH, inject(send_notification), methods=["POST"])]
                ),
                "fastapi": _fastapi_seed_app(),
                "bare": _bare_seed_app,
                DETACHED: detached(
                    Starlette(routes=[Route(PATH, inject(send_notification), methods=["POST"])])
                ),
            },
            request=REQUEST,
            expected_body=EXPECTED_BODY,
            messages=(f"found query: {QUERY}\n", f"message to {EMAIL}\n"),
            executed=EXECUTED,
            requests=150,
            targets=(Target("afterward", "starlette", 1.0), Target("afterward", "fastapi", 2.0)),
            detached=frozenset({DETACHED}),
        ),
    ]
