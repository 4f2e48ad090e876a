"""A request answered at once while its background tasks run afterwards, on a real server.

How to run: python scripts/demo.py
(or `python examples/demo.py` where afterward, uvicorn and httpx are installed)

The demo starts uvicorn on a free loopback port, in a thread of this process, serving a Starlette
app with one endpoint written with `afterward.inject`. The endpoint queues two background tasks: a
slow sync function, which runs in afterward's worker threads, then an async function, which runs on
the event loop. A client sends one request with httpx and prints the response as soon as it has
it, while the tasks are still running; then it waits for each task and prints when it finished.
Every line carries the milliseconds since the demo started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator

import anyio
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from afterward import BackgroundTasks, inject

__all__ = ["Timeline", "build_app", "main"]

TASK_TIMEOUT = 30.0
"""Seconds the client waits for a task before it gives up and the demo fails."""


class Timeline:
    """What the client and the server share in this one process: the clock and the task events."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.server_ready = threading.Event()
        self.report_written = threading.Event()
        self.email_sent = threading.Event()
        self._lock = threading.Lock()

    def ms(self) -> float:
        """Return the milliseconds since the demo started."""
        return (time.perf_counter() - self.start) * 1000

    def say(self, who: str, message: str) -> None:
        """Print one line with a timestamp; lines from the server's threads never interleave."""
        with self._lock:
            print(f"[{self.ms():5.0f} ms] {who:<7} {message}", flush=True)


def write_report(email: str, seconds: float, timeline: Timeline) -> None:
    """A slow sync task: it blocks, so afterward runs it in a worker thread."""
    timeline.say("task 1", f"write_report started in a worker thread ({seconds:.1f} s of work)")
    time.sleep(seconds)  # stands for blocking work: a report, an image, a slow SMTP library
    timeline.report_written.set()


async def send_email(email: str, seconds: float, timeline: Timeline) -> None:
    """An async task: afterward awaits it on the event loop, after the sync task before it."""
    timeline.say("task 2", f"send_email started on the event loop ({seconds:.1f} s of awaiting)")
    await anyio.sleep(seconds)  # stands for the network round trips of sending the email
    timeline.email_sent.set()


def build_app(timeline: Timeline, *, sync_seconds: float, async_seconds: float) -> Starlette:
    """Return the demo's Starlette app: `POST /notify/{email}` queues the two tasks."""

    async def notify(email: str, tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(write_report, email, sync_seconds, timeline)
        tasks.add_task(send_email, email, async_seconds, timeline)
        timeline.say("server", "notify() queued 2 background tasks and returns its response")
        return {"message": f"Notification for {email} sent in the background"}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        timeline.server_ready.set()  # uvicorn accepts connections right after this
        yield

    return Starlette(
        routes=[Route("/notify/{email}", inject(notify), methods=["POST"])], lifespan=lifespan
    )


def main(*, sync_seconds: float = 0.8, async_seconds: float = 0.5) -> int:
    """Serve the app, send one request, wait for its tasks, stop the server; return the exit code.

    Args:
        sync_seconds: How long the sync task blocks its worker thread.
        async_seconds: How long the async task awaits.

    Returns:
        0 if the response came back and both tasks finished, else 1.
    """
    timeline = Timeline()
    app = build_app(timeline, sync_seconds=sync_seconds, async_seconds=async_seconds)
    # A socket bound and listening before the server starts: no race for the port, and a request
    # sent before uvicorn is ready waits in the backlog instead of being refused.
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn")
    print(f"afterward demo: uvicorn serves a Starlette app on http://127.0.0.1:{port}", flush=True)
    thread.start()
    try:
        return _request_and_wait(timeline, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
        print("Server stopped.", flush=True)


def _request_and_wait(timeline: Timeline, base_url: str) -> int:
    if not timeline.server_ready.wait(TASK_TIMEOUT):
        timeline.say("client", f"the server did not start within {TASK_TIMEOUT:.0f} s")
        return 1
    path = "/notify/ada@example.com"
    # trust_env=False: a proxy configured in the environment must not see a loopback request.
    with httpx.Client(base_url=base_url, trust_env=False, timeout=TASK_TIMEOUT) as client:
        timeline.say("client", f"POST {path}")
        sent = timeline.ms()
        response = client.post(path)
        answered = timeline.ms()
    still_running = not timeline.email_sent.is_set()
    timeline.say(
        "client",
        f"response received after {answered - sent:.0f} ms: {json.dumps(response.json())}",
    )
    if response.status_code != 200:
        timeline.say("client", f"unexpected status {response.status_code}; stopping")
        return 1
    if still_running:
        timeline.say("client", "the background tasks are not done yet; waiting for them")
    for name, event in (
        ("task 1 (write_report)", timeline.report_written),
        ("task 2 (send_email)", timeline.email_sent),
    ):
        if not event.wait(TASK_TIMEOUT):
            timeline.say("client", f"{name} did not finish within {TASK_TIMEOUT:.0f} s")
            return 1
        after = timeline.ms() - answered
        timeline.say("client", f"{name} finished, {after:.0f} ms after the response")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)  # a failing task would be logged by afterward
    sys.exit(main())
