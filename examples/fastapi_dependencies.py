"""The dependency example of the FastAPI "Background Tasks" chapter, with afterward's drop-in.

How to run: uvicorn examples.fastapi_dependencies:app
Then: curl -X POST "http://127.0.0.1:8000/send-notification/ada@example.com?q=hello"
After the response, log.txt (in the current directory) holds "found query: hello" (added by the
dependency) and then "message to ada@example.com" (added by the path operation), one per line.

Only the import changes: `BackgroundTasks` comes from `afterward.fastapi` instead of `fastapi`.
The path operation and its dependency `get_query` both declare it and get the request's single
afterward collector, so all tasks run in the order they were added, after the response.
"""

from typing import Annotated

from fastapi import Depends, FastAPI

from afterward.fastapi import BackgroundTasks

app = FastAPI()


def write_log(message: str):
    with open("log.txt", mode="a") as log:
        log.write(message)


def get_query(background_tasks: BackgroundTasks, q: str | None = None):
    if q:
        message = f"found query: {q}\n"
        background_tasks.add_task(write_log, message)
    return q


@app.post("/send-notification/{email}")
async def send_notification(
    email: str, background_tasks: BackgroundTasks, q: Annotated[str, Depends(get_query)]
):
    message = f"message to {email}\n"
    background_tasks.add_task(write_log, message)
    return {"message": "Message sent"}
