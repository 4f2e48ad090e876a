"""Background tasks on responses you build yourself, in plain Starlette: `background=` and `attach`.

How to run: uvicorn examples.custom_response:app
Then:
    curl -X POST http://127.0.0.1:8000/send-notification/ada@example.com
    curl -X POST http://127.0.0.1:8000/send-receipt/ada@example.com
    curl http://127.0.0.1:8000/export
After each response, its tasks append their lines to log.txt (in the current directory).

- `/send-notification/{email}`: an afterward `BackgroundTasks` is a Starlette `BackgroundTasks`,
  so it goes straight into `JSONResponse(content, background=tasks)`.
- `/send-receipt/{email}`: the response comes from code that already gave it a `background` of its
  own (`receipt_response` stands for such a helper or library). Passing `background=` again would
  replace that; `attach(response, tasks)` merges: its task runs first, then ours.
- `/export`: the response is a bare ASGI callable, not a Starlette `Response`. `attach` wraps it so
  the tasks run once its last body chunk has been sent, and not at all if it fails midway.
"""

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from afterward import BackgroundTasks, attach

ROWS = [b"email,notified\n", b"ada@example.com,yes\n", b"grace@example.com,no\n"]


def write_log(message: str) -> None:
    with open("log.txt", mode="a") as log:
        log.write(message)


async def send_notification(request: Request) -> Response:
    email = request.path_params["email"]
    tasks = BackgroundTasks()
    tasks.add_task(write_log, f"notification for {email}\n")
    return JSONResponse({"message": "Notification sent in the background"}, background=tasks)


def receipt_response(email: str) -> Response:
    """Stand for a helper that returns a response with a background task of its own."""
    store = BackgroundTask(write_log, f"receipt stored for {email}\n")
    return JSONResponse({"message": f"Receipt for {email} sent"}, background=store)


async def send_receipt(request: Request) -> Response:
    email = request.path_params["email"]
    tasks = BackgroundTasks()
    tasks.add_task(write_log, f"receipt mailed to {email}\n")
    return attach(receipt_response(email), tasks)


async def export_rows(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI response: the rows as CSV, one body chunk each."""
    headers = [(b"content-type", b"text/csv")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for row in ROWS:
        await send({"type": "http.response.body", "body": row, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def export(request: Request):
    tasks = BackgroundTasks()
    tasks.add_task(write_log, f"export of {len(ROWS) - 1} rows downloaded\n")
    # Starlette sends whatever ASGI callable an endpoint returns, not only Response objects.
    return attach(export_rows, tasks)


app = Starlette(
    routes=[
        Route("/send-notification/{email}", send_notification, methods=["POST"]),
        Route("/send-receipt/{email}", send_receipt, methods=["POST"]),
        Route("/export", export),
    ]
)
