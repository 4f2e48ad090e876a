"""Litestar with `BackgroundTasksMiddleware`: handlers queue tasks with `current_tasks()`.

How to run: uvicorn examples.litestar_app:app
Then: curl -X POST -H "X-Request-ID: r-1" http://127.0.0.1:8000/signup/ada@example.com
The response (201) comes back at once; the audit line and the welcome e-mail follow, detached
from the request (the server's log shows them). Signing up the same address again answers 409,
and neither task runs.

Wrap the Litestar app from outside, as below. Litestar's own `middleware=[...]` list is applied
per route and never sees the ASGI lifespan, so there afterward would get no supervisor and would
run tasks inline after each response (it warns once). Wrapped from outside, the supervisor starts
before the `on_startup` hooks and drains before the `on_shutdown` hooks.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from litestar import Litestar, Request, post
from litestar.exceptions import HTTPException

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


@post("/signup/{email:str}", status_code=201)
async def signup(request: Request[Any, Any, Any]) -> dict[str, str]:
    email = request.path_params["email"]
    request_id.set(request.headers.get("x-request-id", "-"))  # the tasks will see it
    tasks = current_tasks()
    tasks.add_task(write_audit_line, email)
    tasks.add_task(send_welcome_email, email)
    if email in registered:
        # An error response: the tasks queued above do not run (and are logged by name).
        raise HTTPException(status_code=409, detail="already registered")
    registered.add(email)
    return {"message": f"Welcome, {email}"}


def startup() -> None:
    logger.info("the app's own startup")


def shutdown() -> None:
    logger.info("the app's own shutdown, after afterward's drain")


# The ignore: BackgroundTasksMiddleware is typed with Starlette's ASGI types, which Litestar's
# stricter ones do not match under mypy; at run time any ASGI app works.
app = BackgroundTasksMiddleware(
    Litestar([signup], on_startup=[startup], on_shutdown=[shutdown]),
    drain_timeout=10.0,
)
