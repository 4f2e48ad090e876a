"""The first example of the FastAPI "Background Tasks" chapter, with afterward's drop-in.

How to run: uvicorn examples.fastapi_notification:app
Then: curl -X POST http://127.0.0.1:8000/send-notification/ada@example.com
The response comes back at once; afterwards, log.txt (in the current directory) holds
"notification for ada@example.com: some notification".

Only the import changes: `BackgroundTasks` comes from `afterward.fastapi` instead of `fastapi`.
The path operation is untouched, and the task now runs with afterward's semantics (in
afterward's own worker threads; a failure is logged by name instead of reaching the server).
"""

from fastapi import FastAPI

from afterward.fastapi import BackgroundTasks

app = FastAPI()


def write_notification(email: str, message=""):
    with open("log.txt", mode="w") as email_file:
        content = f"notification for {email}: {message}"
        email_file.write(content)


@app.post("/send-notification/{email}")
async def send_notification(email: str, background_tasks: BackgroundTasks):
    background_tasks.add_task(write_notification, email, message="some notification")
    return {"message": "Notification sent in the background"}
