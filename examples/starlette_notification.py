"""The first example of the FastAPI "Background Tasks" chapter, in plain Starlette with afterward.

How to run: uvicorn examples.starlette_notification:app
Then: curl -X POST http://127.0.0.1:8000/send-notification/ada@example.com
The response comes back at once; afterwards, log.txt (in the current directory) holds
"notification for ada@example.com: some notification".

Compared with the FastAPI version, only the imports and the route table change: `inject` gives the
endpoint its typed parameters (`email` from the path, the request's `BackgroundTasks`) and sends
the returned dict as JSON.
"""

from starlette.applications import Starlette
from starlette.routing import Route

from afterward import BackgroundTasks, inject


def write_notification(email: str, message=""):
    with open("log.txt", mode="w") as email_file:
        content = f"notification for {email}: {message}"
        email_file.write(content)


async def send_notification(email: str, background_tasks: BackgroundTasks):
    background_tasks.add_task(write_notification, email, message="some notification")
    return {"message": "Notification sent in the background"}


app = Starlette(
    routes=[Route("/send-notification/{email}", inject(send_notification), methods=["POST"])]
)
