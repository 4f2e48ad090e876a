"""The code blocks of FastAPI's "Background Tasks" chapter (the seed), exactly as it prints them.

Shared by the tests that run them with afterward: on FastAPI with only the import changed
(`test_fastapi.py`) and ported to plain Starlette with `inject` (`test_examples_starlette.py`).
"""

from __future__ import annotations

SEED_NOTIFICATION = """
from fastapi import BackgroundTasks, FastAPI

app = FastAPI()


def write_notification(email: str, message=""):
    with open("log.txt", mode="w") as email_file:
        content = f"notification for {email}: {message}"
        email_file.write(content)


@app.post("/send-notification/{email}")
async def send_notification(email: str, background_tasks: BackgroundTasks):
    background_tasks.add_task(write_notification, email, message="some notification")
    return {"message": "Notification sent in the background"}
"""

SEED_ANNOTATED_PIPE = """
from typing import Annotated

from fastapi import BackgroundTasks, Depends, FastAPI

app = FastAPI()


def write_log(message: str):
    with open("log.txt", mode="a") as log:
        log.write(message)


def get_query(background_tasks: BackgroundTasks, q: str | None = None):
    if q:
        message = f"found query: {q}\\n"
        background_tasks.add_task(write_log, message)
    return q


@app.post("/send-notification/{email}")
async def send_notification(
    email: str, background_tasks: BackgroundTasks, q: Annotated[str, Depends(get_query)]
):
    message = f"message to {email}\\n"
    background_tasks.add_task(write_log, message)
    return {"message": "Message sent"}
"""

SEED_ANNOTATED_UNION = """
from typing import Annotated, Union

from fastapi import BackgroundTasks, Depends, FastAPI

app = FastAPI()


def write_log(message: str):
    with open("log.txt", mode="a") as log:
        log.write(message)


def get_query(background_tasks: BackgroundTasks, q: Union[str, None] = None):
    if q:
        message = f"found query: {q}\\n"
        background_tasks.add_task(write_log, message)
    return q


@app.post("/send-notification/{email}")
async def send_notification(
    email: str, background_tasks: BackgroundTasks, q: Annotated[str, Depends(get_query)]
):
    message = f"message to {email}\\n"
    background_tasks.add_task(write_log, message)
    return {"message": "Message sent"}
"""

SEED_TYPING_EXTENSIONS_ANNOTATED = """
from typing import Union

from fastapi import BackgroundTasks, Depends, FastAPI
from typing_extensions import Annotated

app = FastAPI()


def write_log(message: str):
    with open("log.txt", mode="a") as log:
        log.write(message)


def get_query(background_tasks: BackgroundTasks, q: Union[str, None] = None):
    if q:
        message = f"found query: {q}\\n"
        background_tasks.add_task(write_log, message)
    return q


@app.post("/send-notification/{email}")
async def send_notification(
    email: str, background_tasks: BackgroundTasks, q: Annotated[str, Depends(get_query)]
):
    message = f"message to {email}\\n"
    background_tasks.add_task(write_log, message)
    return {"message": "Message sent"}
"""

SEED_DEFAULT_PIPE = """
from fastapi import BackgroundTasks, Depends, FastAPI

app = FastAPI()


def write_log(message: str):
    with open("log.txt", mode="a") as log:
        log.write(message)


def get_query(background_tasks: BackgroundTasks, q: str | None = None):
    if q:
        message = f"found query: {q}\\n"
        background_tasks.add_task(write_log, message)
    return q


@app.post("/send-notification/{email}")
async def send_notification(
    email: str, background_tasks: BackgroundTasks, q: str = Depends(get_query)
):
    message = f"message to {email}\\n"
    background_tasks.add_task(write_log, message)
    return {"message": "Message sent"}
"""

SEED_DEFAULT_UNION = """
from typing import Union

from fastapi import BackgroundTasks, Depends, FastAPI

app = FastAPI()


def write_log(message: str):
    with open("log.txt", mode="a") as log:
        log.write(message)


def get_query(background_tasks: BackgroundTasks, q: Union[str, None] = None):
    if q:
        message = f"found query: {q}\\n"
        background_tasks.add_task(write_log, message)
    return q


@app.post("/send-notification/{email}")
async def send_notification(
    email: str, background_tasks: BackgroundTasks, q: str = Depends(get_query)
):
    message = f"message to {email}\\n"
    background_tasks.add_task(write_log, message)
    return {"message": "Message sent"}
"""

SEED_DEPENDENCY_VARIANTS = {
    "annotated-pipe": SEED_ANNOTATED_PIPE,
    "annotated-union": SEED_ANNOTATED_UNION,
    "typing-extensions-annotated-union": SEED_TYPING_EXTENSIONS_ANNOTATED,
    "default-pipe": SEED_DEFAULT_PIPE,
    "default-union": SEED_DEFAULT_UNION,
}
