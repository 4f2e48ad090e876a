"""FastAPI with `BackgroundTasksMiddleware`: path operations queue tasks with `current_tasks()`.

How to run: uvicorn examples.fastapi_middleware:app
Then: curl -X POST -H "X-Request-ID: r-1" http://127.0.0.1:8000/signup/ada@example.com
The response (201) comes back at once; the audit line and the welcome e-mail follow, detached
from the request (the server's log shows them). Signing up the same address again answers 409,
and neither task runs.

`app.add_middleware(BackgroundTasksMiddleware, ...)` installs it, as does
`FastAPI(middleware=[Middleware(BackgroundTasksMiddleware, ...)])`. With the middleware installed,
code deep below the path operation (a service function, a sync dependency run in a thread) can
queue work with `current_tasks()`, without a parameter threaded through every call.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar

from fastapi import FastAPI, Header, HTTPException

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


def register(email: str) -> None:
    """A plain service function: it reaches the request's collector without a parameter."""
    tasks = current_tasks()
    tasks.add_task(write_audit_line, email)
    tasks.add_task(send_welcome_email, email)
    if email in registered:
        # An error response: the tasks queued above do not run (and are logged by name).
        raise HTTPException(409, "already registered")
    registered.add(email)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    logger.info("the app's own startup")
    yield
    logger.info("the app's own shutdown, after afterward's drain")


app = FastAPI(lifespan=lifespan)
app.add_middleware(BackgroundTasksMiddleware, drain_timeout=10.0)


@app.post("/signup/{email}", status_code=201)
async def signup(email: str, x_request_id: str = Header("-")) -> dict[str, str]:
    request_id.set(x_request_id)  # the tasks will see it
    register(email)
    return {"message": f"Welcome, {email}"}
