"""Shared by the reliability tests: a real `uvicorn` process serving `apps/reliability_app.py`.

`served(mode)` starts it on a free loopback port and yields a `Server`: its URL, its output
(the `afterward` logger's lines among it), its resident memory, and `load(...)`, which runs
`loadgen.py` in another process against it. Figures go through `figure(...)`: printed (pytest
shows them with `-rP` or `-s`) and, when `RELIABILITY_FIGURES` names a file, appended to it as
JSON lines for `scripts/soak.py` and `docs/reliability.md`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
TEST_APPS = HERE.parent / "apps"  # the Celery tests' worker module (`celery_tasks`)
LOADGEN = HERE / "loadgen.py"

MODES = ["inject", "fastapi", "middleware"]
"""The ways a request gets its tasks today: inline with `inject`, inline with the FastAPI drop-in,
detached under `BackgroundTasksMiddleware`. A backend (Celery) or a task policy is one more entry
here once the app knows how to build it (`make_app` in `apps/reliability_app.py`)."""

INLINE = {"inject", "fastapi"}
STARTUP_TIMEOUT = 30


def scale(ci: int, soak: int) -> int:
    """A request count: `ci` in the test suite, `soak` when RELIABILITY_SOAK=1 (scripts/soak.py)."""
    return soak if os.environ.get("RELIABILITY_SOAK") == "1" else ci


def figure(test: str, mode: str, **values: Any) -> None:
    """Print a test's measured figures, and append them to $RELIABILITY_FIGURES if set."""
    row = {"test": test, "mode": mode, **values}
    print("FIGURE", json.dumps(row))
    target = os.environ.get("RELIABILITY_FIGURES")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")


class Output:
    """The lines a process prints, read in a thread; wait for lines without polling."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._process = process
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<eof>")
            self._changed.notify_all()

    def count(self, text: str) -> int:
        with self._changed:
            return sum(text in line for line in self.lines)

    def wait_for(self, count: int, text: str, timeout: float = 30) -> None:
        with self._changed:

            def seen() -> int:
                return sum(text in line for line in self.lines)

            self._changed.wait_for(lambda: seen() >= count or "<eof>" in self.lines, timeout)
            if seen() < count:
                raise AssertionError(f"never saw {count} x {text!r}:\n" + self.text[-5000:])

    def close(self) -> None:
        self._thread.join(10)
        assert self._process.stdout is not None
        self._process.stdout.close()

    @property
    def text(self) -> str:
        with self._changed:
            return "\n".join(self.lines)


class Server:
    """A running uvicorn process serving the reliability app."""

    def __init__(self, process: subprocess.Popen[str], output: Output, url: str) -> None:
        self.process = process
        self.output = output
        self.url = url
        self.client = httpx.Client(base_url=url, timeout=90)
        self.mark = 0  # where the current test's output starts (see `since_mark`)

    def since_mark(self) -> list[str]:
        """The output lines printed since the current test started (`shared` sets the mark)."""
        return self.output.lines[self.mark :]

    def rss_mb(self) -> float:
        """The server process's resident set size now, in MB (VmRSS of /proc/<pid>/status)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS line")  # pragma: no cover

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params)
        assert response.status_code == 200, (response.status_code, response.text)
        return response.json()

    def records(self, expect: int, of: str = "records", wait: float = 20) -> dict[str, Any]:
        """The records of the tasks so far, once at least `expect` are there (the app waits up
        to `wait` seconds)."""
        result: dict[str, Any] = self.get("/records", expect=expect, of=of, wait=wait)
        return result

    def load(
        self, path: str, requests: int, concurrency: int, start: int = 0, by_request: bool = False
    ) -> dict[str, Any]:
        """Run `loadgen.py` in another process against this server; return its figures."""
        command = [
            sys.executable,
            str(LOADGEN),
            self.url,
            path,
            f"--requests={requests}",
            f"--concurrency={concurrency}",
            f"--start={start}",
            *(["--by-request"] if by_request else []),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    @contextlib.contextmanager
    def loading(
        self, path: str, requests: int, concurrency: int, start: int = 0, by_request: bool = False
    ) -> Iterator[subprocess.Popen[str]]:
        """Start `loadgen.py` in the background for the block; it is waited for on exit."""
        command = [
            sys.executable,
            str(LOADGEN),
            self.url,
            path,
            f"--requests={requests}",
            f"--concurrency={concurrency}",
            f"--start={start}",
            *(["--by-request"] if by_request else []),
        ]
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
            yield process  # the block may read its output (`communicate`) itself
            if process.returncode is None:
                process.communicate(timeout=600)

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def served(
    mode: str, *, graceful: int = 10, app: str = "reliability_app:app", **env: str | float | int
) -> Iterator[Server]:
    """Serve the reliability app with `uvicorn` in a process of its own, in `mode`.

    Args:
        mode: One of `MODES`.
        graceful: uvicorn's --timeout-graceful-shutdown, seconds.
        app: What uvicorn serves (`apps/celery_web.py`'s app for the Celery tests).
        env: More environment for the app (WORKERS, DRAIN_TIMEOUT, TASK_SECONDS).
    """
    port = free_port()
    environment = {
        **os.environ,
        "MODE": mode,
        **{key: str(value) for key, value in env.items()},
        "PYTHONPATH": os.pathsep.join(
            [str(APPS), str(TEST_APPS), os.environ.get("PYTHONPATH", "")]
        ),
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host=127.0.0.1",
        f"--port={port}",
        "--lifespan=on",
        "--no-access-log",
        f"--timeout-graceful-shutdown={graceful}",
    ]
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = Output(process)
    server = Server(process, output, f"http://127.0.0.1:{port}")
    try:
        output.wait_for(1, "Uvicorn running on", timeout=STARTUP_TIMEOUT)
        yield server
    finally:
        server.client.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:  # pragma: no cover - reported by the test
                process.kill()
                process.wait()
        output.close()


@pytest.fixture(scope="module", name="shared")
def shared_servers() -> Iterator[Callable[[str], Server]]:
    """`shared(mode)`: one server per mode for a whole test module, its records reset per call.

    Starting a server costs a second or more; tests that leave it in a clean state share one.
    A test module imports `shared_servers` and takes a `shared` argument.
    """
    with contextlib.ExitStack() as stack:
        servers: dict[str, Server] = {}

        def get(mode: str) -> Server:
            if mode not in servers:
                servers[mode] = stack.enter_context(served(mode))
            server = servers[mode]
            server.get("/reset")
            server.mark = len(server.output.lines)
            return server

        yield get
