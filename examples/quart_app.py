"""Quart with `BackgroundTasksMiddleware`: views queue tasks with `current_tasks()`.

How to run: uvicorn examples.quart_app:app
Then: curl -X POST -H "X-Request-ID: r-1" http://127.0.0.1:8000/signup/ada@example.com
The response (201) comes back at once; the audit line and the welcome e-mail follow, detached
from the request (the server's log shows them). Signing up the same address again answers 409,
and neither task runs.

The middleware wraps `app.asgi_app`, Quart's (and Flask's) idiom for ASGI middleware: `app` stays
a Quart object, for `quart run` and its test client, and the lifespan still goes through the
middleware, so the supervisor starts before the `before_serving` functions and drains before the
`after_serving` ones.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

from quart import Quart, abort, request

from afterward import BackgroundTasksMiddleware, current_tasks

logger = logging.getLogger(__name__)
request_id: ContextVar[str] = ContextVar("request_id", default="-")
audit_log: list[str] = []  # stands for a file or a table
outbox: list[str] = []  # stands for an SMTP server
registered: set[str] = set()

app = Quart(__name__)
# The ignore: BackgroundTasksMiddleware is typed with Starlette's ASGI types, which Quart's
# stricter ones do not match under mypy; at run time any ASGI app works.
app.asgi_app = BackgroundTasksMiddleware(app.asgi_app, drain_timeout=10.0)  # type: ignore[assignment]


def write_audit_line(email: str) -> None:
    """A sync task: afterward runs it in one of its worker threads."""
    audit_log.append(f"{request_id.get()} signup {email}")
    logger.info("audit: %s signed up (request %s)", email, request_id.get())


async def send_welcome_email(email: str) -> None:
    """An async task: afterward awaits it on the event loop."""
    outbox.append(f"{request_id.get()} welcome {email}")
    logger.info("welcome e-mail sent to %s (request %s)", email, request_id.get())


@app.post("/signup/<email>")
async def signup(email: str) -> tuple[dict[str, str], int]:
    request_id.set(request.headers.get("X-Request-ID", "-"))  # the tasks will see it
    tasks = current_tasks()
    tasks.add_task(write_audit_line, email)
    tasks.add_task(send_welcome_email, email)
    if email in registered:
        # An error response: the tasks queued above do not run (and are logged by name).
        abort(409)
    registered.add(email)
    return {"message": f"Welcome, {email}"}, 201


@app.before_serving
async def startup() -> None:
    logger.info("the app's own startup")


@app.after_serving
async def shutdown() -> None:
    logger.info("the app's own shutdown, after afterward's drain")
