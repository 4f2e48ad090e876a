"""The web app: the same `add_task` calls as in-process, sent to Celery by the middleware.

uvicorn examples.celery_app.web:app
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import afterward
from afterward import BackgroundTasksMiddleware
from afterward.celery import CeleryBackend

from .tasks import send_welcome_email, update_crm
from .worker import celery_app


async def signup(request: Request) -> JSONResponse:
    data = await request.json()
    tasks = afterward.current_tasks()
    tasks.add_task(send_welcome_email, data["email"])
    tasks.add_task(update_crm, data["email"], data.get("plan", "free"))
    # A 201 means both tasks are durably queued: they were enqueued before the response started.
    return JSONResponse({"welcome": data["email"]}, status_code=201)


app = BackgroundTasksMiddleware(
    Starlette(routes=[Route("/signup", signup, methods=["POST"])]),
    backend=CeleryBackend(celery_app),
)
