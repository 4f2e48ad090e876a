"""Instructions per request, counted by valgrind's callgrind: immune to the machine's load.

`python benchmarks/instructions.py VARIANT [VARIANT ...]` serves each variant of
`benchmarks/e2e_apps.py` with uvicorn (httptools, uvloop) under `valgrind --tool=callgrind`, sends
it untimed warm-up requests, switches callgrind's counting on (`callgrind_control -i on`), sends
`--requests` requests over `--connections` keep-alive connections, switches counting off and stops
the server. It prints the instructions executed per request by the server's event-loop thread
(the thread that serves the requests) and by all of its threads together (the event loop plus
afterward's worker threads, which run detached sync tasks).

Wall-clock rates through a real server swing by 40 % from round to round on a small shared
machine (see README.md); an instruction count does not depend on the other processes, so a
difference of a few percent between two variants is real. It is not a rate: it does not see
cache misses, GIL hand-overs between threads or the kernel's work (system calls are counted on
the Python side only). Valgrind runs one thread at a time, so worker threads wake up otherwise
than on a real server; the event-loop thread's count is the one to compare.

Needs valgrind (`apt-get install valgrind`); run it with the project's `.venv` Python (the one
`benchmarks/e2e.py` sets up, with the `bench` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextvars import ContextVar
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from benchmarks import e2e_apps
from benchmarks.e2e_apps import PATH, VARIANTS, AppVariant, starlette_app

__all__ = ["REFERENCES", "count_variant", "main", "thread_totals"]

ROOT = Path(__file__).resolve().parent.parent
REQUEST = f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode("ascii")


async def _one_connection(port: int, requests: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(requests):
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"Unexpected response: {head!r}")
            match = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
            if match is None:
                raise RuntimeError(f"No content-length in {head!r}")
            await reader.readexactly(int(match.group(1)))
    finally:
        writer.close()


async def _wait_listening(port: int) -> None:
    """Wait until the server (slow under valgrind) accepts connections."""
    deadline = time.monotonic() + 120
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        else:
            writer.close()
            return


async def _load(port: int, requests: int, connections: int) -> None:
    share, extra = divmod(requests, connections)
    await asyncio.gather(*(_one_connection(port, share + (i < extra)) for i in range(connections)))


# --- reference middleware: what a minimal one costs -------------------------------------------

_slot: ContextVar[object] = ContextVar("reference_slot")


class Passthrough:
    """A pure-ASGI middleware that only calls the app: one coroutine frame."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class SetVar(Passthrough):
    """Sets a context variable to a fresh object for the request, resets it after."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _slot.set(object())
        try:
            await self.app(scope, receive, send)
        finally:
            _slot.reset(token)


class SetVarWrapSend(Passthrough):
    """The least a detached middleware does: a context variable, and a watch on `send`."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        completed = False

        async def watch(message: Message) -> None:
            nonlocal status, completed
            await send(message)
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                completed = True

        token = _slot.set(object())
        try:
            await self.app(scope, receive, watch)
        finally:
            _slot.reset(token)
        if completed and status < 400:
            pass


def _queue_floor() -> ASGIApp:
    """A Starlette endpoint that puts its one sync task on a `queue.SimpleQueue` for one thread.

    The floor of a detached sync task: the least the event loop's thread can do to hand a task
    over (no collector, no limits, no error handling). Its lifespan drains the queue at shutdown,
    so no task of one app is still running when the next app (or test) starts counting.
    """
    jobs: queue.SimpleQueue[tuple[Callable[[str], object], str] | None] = queue.SimpleQueue()

    def drain() -> None:
        while (job := jobs.get()) is not None:
            func, arg = job
            func(arg)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        worker = threading.Thread(
            target=drain, daemon=True, name=f"{e2e_apps.AFTERWARD_WORKER}-floor"
        )
        worker.start()
        try:
            yield
        finally:
            jobs.put(None)
            await anyio.to_thread.run_sync(worker.join)

    async def send_notification(request: Request) -> Response:
        next(e2e_apps.REQUESTS)
        email = request.path_params["email"]
        jobs.put((e2e_apps.record_sync, f"message to {email}\n"))
        return JSONResponse(e2e_apps.BODY)

    app = Starlette(
        routes=[
            Route(e2e_apps.ROUTE, send_notification, methods=["POST"]),
            Route("/count", e2e_apps.starlette_count, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.jobs = jobs  # for the tests: a job put last runs after every earlier one
    return app


REFERENCES = {
    v.name: v
    for v in (
        AppVariant(
            "reference-passthrough",
            0,
            "none",
            "a middleware that only calls the app",
            lambda: Passthrough(starlette_app(None, 0)),
        ),
        AppVariant(
            "reference-setvar",
            0,
            "none",
            "a middleware that sets a context variable",
            lambda: SetVar(starlette_app(None, 0)),
        ),
        AppVariant(
            "reference-wrapsend",
            0,
            "none",
            "a middleware that sets a context variable and wraps send",
            lambda: SetVarWrapSend(starlette_app(None, 0)),
        ),
        AppVariant(
            "reference-queue",
            1,
            "sync",
            "a Starlette endpoint putting its sync task on a SimpleQueue for one thread",
            _queue_floor,
        ),
    )
}


def _control(pid: int, *args: str) -> None:
    subprocess.run(
        ["callgrind_control", *args, str(pid)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def thread_totals(out_dir: Path) -> list[int]:
    """Return the instruction total of each thread's dump (thread 1 first)."""
    found: list[tuple[int, int]] = []
    for path in out_dir.glob("callgrind.out.*"):
        thread = re.search(r"-(\d+)$", path.name)
        text = path.read_text(errors="replace")
        totals = re.findall(r"^(?:totals|summary): (\d+)", text, re.MULTILINE)
        if totals:
            found.append((int(thread.group(1)) if thread else 1, int(totals[-1])))
    return [total for _, total in sorted(found)]


def count_variant(
    variant: str, *, requests: int, warmup: int, connections: int, keep: Path | None = None
) -> tuple[float, float]:
    """Return (event-loop thread, all threads) instructions per request for `variant`.

    `keep`: a directory to keep callgrind's files in (for `callgrind_annotate`), else they
    are deleted.
    """
    out_dir = Path(tempfile.mkdtemp(prefix="afterward-callgrind-")) if keep is None else keep
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--separate-threads=yes",
        f"--callgrind-out-file={out_dir}/callgrind.out.%p",
        sys.executable,
        "-m",
        "benchmarks.instructions",
        "--serve",
        variant,
    ]
    env = dict(os.environ, PYTHONHASHSEED="0")
    server = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        asyncio.run(_wait_listening(port))
        asyncio.run(_load(port, warmup, connections))
        _control(server.pid, "-i", "on")
        asyncio.run(_load(port, requests, connections))
        _control(server.pid, "-i", "off")
        time.sleep(0.5)  # tasks still running are not counted: the loop thread is what counts
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=120)
    totals = thread_totals(out_dir)
    if keep is None:
        shutil.rmtree(out_dir, ignore_errors=True)
    if not totals:
        raise RuntimeError(f"callgrind wrote no totals for {variant}:\n{stderr[-2000:]}")
    return totals[0] / requests, sum(totals) / requests


def main(argv: Sequence[str] | None = None) -> int:
    """Count and print instructions per request for each variant given."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve"]:  # in the server process, under valgrind
        e2e_apps.VARIANTS.update(REFERENCES)
        e2e_apps.main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="python benchmarks/instructions.py")
    parser.add_argument("variants", nargs="+", choices=[*VARIANTS, *REFERENCES], metavar="VARIANT")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument(
        "--keep", type=Path, help="keep callgrind's files in DIR/VARIANT (callgrind_annotate)"
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind was not found on PATH (apt-get install valgrind).", file=sys.stderr)
        return 2
    first: float | None = None
    for variant in args.variants:
        loop, every = count_variant(
            variant,
            requests=args.requests,
            warmup=args.warmup,
            connections=args.connections,
            keep=None if args.keep is None else args.keep / variant,
        )
        first = loop if first is None else first
        print(
            f"{variant:24} loop thread {loop:10,.0f} instr/request ({loop / first:5.3f}x first)"
            f"   all threads {every:10,.0f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
