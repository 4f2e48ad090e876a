"""A raw ASGI app, no framework, with `BackgroundTasksMiddleware`.

How to run: uvicorn examples.raw_asgi_app:app
Then: curl -X POST -H "X-Request-ID: r-1" http://127.0.0.1:8000/signup/ada@example.com
The response (201) comes back at once; the audit line and the welcome e-mail follow, detached
from the request (the server's log shows them). Signing up the same address again answers 409,
and neither task runs.

Like many hand-written ASGI apps, this one raises on any scope but HTTP, the lifespan included.
The middleware then answers the server's lifespan events itself, so its supervisor still starts
with the server and drains when the server stops.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar

from starlette.types import Receive, Scope, Send

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


async def signup_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise ValueError(f"This app only speaks HTTP, not {scope['type']!r}.")
    prefix = "/signup/"
    if scope["method"] != "POST" or not scope["path"].startswith(prefix):
        await respond(send, 404, {"detail": "Not Found"})
        return
    email = scope["path"][len(prefix) :]
    headers = dict(scope["headers"])
    request_id.set(headers.get(b"x-request-id", b"-").decode("latin-1"))  # the tasks will see it
    tasks = current_tasks()
    tasks.add_task(write_audit_line, email)
    tasks.add_task(send_welcome_email, email)
    if email in registered:
        # An error response: the tasks queued above do not run (and are logged by name).
        await respond(send, 409, {"detail": "already registered"})
        return
    registered.add(email)
    await respond(send, 201, {"message": f"Welcome, {email}"})


async def respond(send: Send, status: int, payload: dict[str, str]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


app = BackgroundTasksMiddleware(signup_app, drain_timeout=10.0)
