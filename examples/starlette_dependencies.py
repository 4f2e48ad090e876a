"""The dependency example of the FastAPI "Background Tasks" chapter, in plain Starlette.

How to run: uvicorn examples.starlette_dependencies:app
Then: curl -X POST "http://127.0.0.1:8000/send-notification/ada@example.com?q=hello"
After the response, log.txt (in the current directory) holds "found query: hello" (added by the
dependency) and then "message to ada@example.com" (added by the endpoint), one per line.

`BackgroundTasks` is declared both in the endpoint and in its dependency `get_query`; `inject`
passes the request's single collector to both, so all tasks run in the order they were added.
Compared with the FastAPI version, only the imports and the route table change.
"""

from typing import Annotated

from starlette.applications import Starlette
from starlette.routing import Route

from afterward import BackgroundTasks, Depends, inject


def write_log(message: str):
    with open("log.txt", mode="a") as log:
        log.write(message)


def get_query(background_tasks: BackgroundTasks, q: str | None = None):
    if q:
        message = f"found query: {q}\n"
        background_tasks.add_task(write_log, message)
    return q


async def send_notification(
    email: str, background_tasks: BackgroundTasks, q: Annotated[str, Depends(get_query)]
):
    message = f"message to {email}\n"
    background_tasks.add_task(write_log, message)
    return {"message": "Message sent"}


app = Starlette(
    routes=[Route("/send-notification/{email}", inject(send_notification), methods=["POST"])]
)
