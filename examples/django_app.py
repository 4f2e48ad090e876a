"""A one-file Django project whose views queue background tasks with afterward.

How to run: uvicorn examples.django_app:app
Then: curl -X POST -H "X-Request-ID: r-1" http://127.0.0.1:8000/signup/ada@example.com
The response (201) comes back at once; afterwards the audit line and the welcome e-mail appear in
the server's log. Signing up the same address again answers 409, and neither task runs.

Django's `ASGIHandler` refuses the ASGI lifespan, so `BackgroundTasksMiddleware` answers it
itself: its supervisor still starts when the server starts and drains when it stops. Sync views
(Django runs them in a thread) reach the request's collector with `current_tasks()` too.
In a real project, wrap the application in your `asgi.py`:
`application = BackgroundTasksMiddleware(get_asgi_application())`.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar

import django
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.urls import path

from afterward import BackgroundTasksMiddleware, current_tasks

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="examples-only-not-a-secret",
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["127.0.0.1", "localhost", "testserver"],
        MIDDLEWARE=[],
        DATABASES={},
        INSTALLED_APPS=[],
    )
    django.setup()

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


def signup(request: HttpRequest, email: str) -> HttpResponse:
    """A sync view: Django runs it in a thread, where `current_tasks()` works all the same."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    request_id.set(request.headers.get("X-Request-ID", "-"))
    tasks = current_tasks()
    tasks.add_task(write_audit_line, email)
    tasks.add_task(send_welcome_email, email)
    if email in registered:
        # An error response: the tasks queued above do not run (and are logged by name).
        return HttpResponse(json.dumps({"detail": "already registered"}), status=409)
    registered.add(email)
    return JsonResponse({"message": f"Welcome, {email}"}, status=201)


async def signup_async(request: HttpRequest, email: str) -> HttpResponse:
    """The same as an async view, on the event loop."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    request_id.set(request.headers.get("X-Request-ID", "-"))
    tasks = current_tasks()
    tasks.add_task(write_audit_line, email)
    tasks.add_task(send_welcome_email, email)
    if email in registered:
        return HttpResponse(json.dumps({"detail": "already registered"}), status=409)
    registered.add(email)
    return JsonResponse({"message": f"Welcome, {email}"}, status=201)


urlpatterns = [
    path("signup/<str:email>", signup),
    path("async/signup/<str:email>", signup_async),
]

app = BackgroundTasksMiddleware(get_asgi_application())
