"""Starlette with `BackgroundTasksMiddleware`: endpoints queue tasks with `current_tasks()`.

How to run: uvicorn examples.starlette_middleware:app
Then: curl -X POST -H "X-Request-ID: r-1" http://127.0.0.1:8000/signup/ada@example.com
The response (201) comes back at once; the audit line and the welcome e-mail follow, detached
from the request (the server's log shows them). Signing up the same address again answers 409,
and neither task runs.

The middleware goes in the app's middleware list, `Middleware(BackgroundTasksMiddleware, ...)`;
`app = BackgroundTasksMiddleware(Starlette(...))` works the same. Starlette passes the lifespan
through its middleware, so afterward's supervisor starts before the app's own lifespan and drains
before the app's shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from afterward import BackgroundTasksMiddleware, current_tasks

logger = logging.getLogger(__name__)
request_id: ContextVar[str] = ContextVar("request_id", default="-")
audit_log: list[str] = []  # stands for a file or a table
outbox: list[str] = []  # stands for an SMTP server
registered: set[str] = set()


def write_audit_line(email: str) -> None:
    """A sync task: afterward runs it in one of its worker threads."""
    audit_log.append(f"{request_id.get()} signup {email}")
    logger.info("audit: %s signed up (request %s)", email, request_id.get())


async def send_welcome_email(email: str) -> None:
    """An async task: afterward awaits it on the event loop."""
    outbox.append(f"{request_id.get()} welcome {email}")
    logger.info("welcome e-mail sent to %s (request %s)", email, request_id.get())


async def signup(request: Request) -> JSONResponse:
    email = request.path_params["email"]
    request_id.set(request.headers.get("x-request-id", "-"))  # the tasks will see it
    tasks = current_tasks()
    tasks.add_task(write_audit_line, email)
    tasks.add_task(send_welcome_email, email)
    if email in registered:
        # An error response: the tasks queued above do not run (and are logged by name).
        raise HTTPException(409, "already registered")
    registered.add(email)
    return JSONResponse({"message": f"Welcome, {email}"}, status_code=201)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    logger.info("the app's own startup")
    yield
    logger.info("the app's own shutdown, after afterward's drain")


app = Starlette(
    routes=[Route("/signup/{email}", signup, methods=["POST"])],
    middleware=[Middleware(BackgroundTasksMiddleware, drain_timeout=10.0)],
    lifespan=lifespan,
)
