"""docs/logging.md: every code block runs, and what the page says about logs holds.

The uvicorn examples run a real uvicorn in a subprocess on a loopback port (logging is configured
per process, and `dictConfig` would close pytest's own handlers); its stderr is read line by line
in a thread, and every wait has a deadline.
"""

from __future__ import annotations

import logging
import queue
import re
import shlex
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.responses import JSONResponse

from docs_blocks import blocks, run_blocks

PAGE = "logging.md"
TIMEOUT = 10

# The app the page's examples are about, as the module `myapp` (the name in the page's logs).
MYAPP = """
from fastapi import FastAPI, HTTPException

from afterward.fastapi import BackgroundTasks

app = FastAPI()


def send_invoice(order_id: int) -> None:
    raise ConnectionError("the mail server is down")


def send_welcome(order_id: int) -> None:
    pass


@app.post("/orders/{order_id}")
async def order(order_id: int, background_tasks: BackgroundTasks) -> dict[str, str]:
    background_tasks.add_task(send_invoice, order_id)
    background_tasks.add_task(send_welcome, order_id)
    return {"status": "ordered"}


@app.post("/refused/{order_id}")
async def refused(order_id: int, background_tasks: BackgroundTasks) -> dict[str, str]:
    background_tasks.add_task(send_invoice, order_id)
    background_tasks.add_task(send_welcome, order_id)
    raise HTTPException(status_code=403)
"""


@pytest.fixture
def myapp() -> Iterator[types.ModuleType]:
    module = types.ModuleType("myapp")
    sys.modules["myapp"] = module  # FastAPI resolves annotations through the module
    try:
        exec(compile(MYAPP, "myapp.py", "exec"), module.__dict__)
        yield module
    finally:
        del sys.modules["myapp"]


def text_block(label: str) -> list[str]:
    language, code = blocks(PAGE)[label]
    assert language == "text"
    return code.splitlines()


def test_every_block_of_the_page_is_run_by_a_test_here() -> None:
    assert list(blocks(PAGE)) == [
        "failure",
        "not-run",
        "uvicorn-run",
        "uvicorn-output",
        "json-file",
        "uvicorn-cli",
        "on-error",
    ]


def formatted(record: logging.LogRecord) -> list[str]:
    return logging.Formatter("%(levelname)s %(name)s: %(message)s").format(record).splitlines()


def matches(shown: list[str], printed: list[str]) -> bool:
    """Whether the page's lines appear in `printed` in order; `  ...` stands for any lines."""
    patterns = [
        re.compile(re.escape(line).replace("50312", r"\d+"))
        for line in shown
        if line.strip() != "..."
    ]
    remaining = iter(printed)
    return all(any(p.fullmatch(line) for line in remaining) for p in patterns)


@pytest.mark.anyio
async def test_a_failure_looks_as_the_page_shows(
    myapp: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    transport = httpx.ASGITransport(app=myapp.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.post("/orders/42")).status_code == 200
    [record] = [r for r in caplog.records if r.name == "afterward"]
    assert record.levelno == logging.ERROR
    assert getattr(record, "afterward_task", None) == "myapp.send_invoice"
    assert matches(text_block("failure"), formatted(record))
    shown = text_block("failure")
    assert formatted(record)[0] == shown[0]
    assert formatted(record)[-1] == shown[-1]


@pytest.mark.anyio
async def test_tasks_not_run_look_as_the_page_shows(
    myapp: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="afterward")
    transport = httpx.ASGITransport(app=myapp.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.post("/refused/42")).status_code == 403
    [record] = [r for r in caplog.records if r.name == "afterward"]
    assert formatted(record) == text_block("not-run")


class Server:
    """A uvicorn subprocess whose output (stderr, and stdout for access logs) a thread reads."""

    def __init__(self, command: list[str], cwd: Path) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.process = subprocess.Popen(
            command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str) -> re.Match[str]:
        """Return the match of the first new line matching `pattern`; fail after TIMEOUT."""
        while True:
            try:
                line = self.lines.get(timeout=TIMEOUT)
            except queue.Empty:
                pytest.fail(f"uvicorn never printed {pattern!r}; it printed {self.seen}")
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(TIMEOUT)
        self.reader.join(TIMEOUT)  # the pipe ends with the process
        assert self.process.stdout is not None
        self.process.stdout.close()
        while not self.lines.empty():
            self.seen.append(self.lines.get_nowait())


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "myapp.py").write_text(MYAPP)
    return tmp_path


def serve(command: list[str], cwd: Path, *, info: bool = True) -> list[str]:
    """Start uvicorn, make one failing and one refused request, return what it printed.

    With `info`, wait for the INFO line that names the refused request's tasks; without, for
    uvicorn's access line of that request (the `afterward` INFO line would come before it).
    """
    server = Server(command, cwd)
    try:
        port = server.wait_for(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as client:
            assert client.post("/orders/42").status_code == 200
            server.wait_for("^ConnectionError: the mail server is down$")
            assert client.post("/refused/42").status_code == 403
            server.wait_for("Not running 2 background task" if info else "POST /refused/42")
    finally:
        server.stop()
    return server.seen


def check_output(printed: list[str]) -> None:
    assert matches(text_block("uvicorn-output"), printed), printed
    refused = (
        "INFO:     Not running 2 background task(s) because the request failed with HTTPException: "
        "myapp.send_invoice, myapp.send_welcome."
    )
    assert refused in printed


def test_the_uvicorn_run_config_shows_failures_and_tasks_not_run(app_dir: Path) -> None:
    _, code = blocks(PAGE)["uvicorn-run"]
    call = 'uvicorn.run("myapp:app", log_config=log_config)'
    assert code.count(call) == 1
    # The only change: an ephemeral port instead of 8000, which may be taken.
    script = code.replace(call, call[:-1] + ', host="127.0.0.1", port=0)')
    (app_dir / "serve.py").write_text(script)
    check_output(serve([sys.executable, "serve.py"], app_dir))


def test_the_log_config_file_works_with_the_uvicorn_command(
    app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(app_dir)
    run_blocks(PAGE, "uvicorn-run", "json-file")
    assert (app_dir / "logging.json").exists()
    _, command = blocks(PAGE)["uvicorn-cli"]
    program, *arguments = shlex.split(command)
    assert program == "uvicorn"
    full = [sys.executable, "-m", "uvicorn", *arguments, "--host", "127.0.0.1", "--port", "0"]
    check_output(serve(full, app_dir))


def test_without_a_handler_uvicorn_prints_the_failure_bare_and_drops_info(app_dir: Path) -> None:
    """What the page says happens before the `afterward` logger gets a handler."""
    command = [sys.executable, "-m", "uvicorn", "myapp:app", "--host", "127.0.0.1", "--port", "0"]
    printed = serve(command, app_dir, info=False)
    assert "Background task myapp.send_invoice failed; the remaining tasks still run." in printed
    assert not any("Not running" in line for line in printed)


# An inject app whose collector is the page's `ReportedTasks`, run in the page's module.
REPORTED_APP = """
from starlette.applications import Starlette
from starlette.routing import Route

from afterward import inject

done: list[int] = []


def send_invoice(order_id: int) -> None:
    raise ConnectionError("the mail server is down")


async def order(order_id: int, background_tasks: ReportedTasks) -> dict[str, str]:
    background_tasks.add_task(send_invoice, order_id)
    background_tasks.add_task(done.append, order_id)
    return {"status": "ordered"}


app = Starlette(routes=[Route("/orders/{order_id}", inject(order), methods=["POST"])])
"""


@pytest.mark.anyio
async def test_the_on_error_recipe_reports_the_failure_by_name() -> None:
    example = run_blocks(PAGE, "on-error", name="myapp")
    exec(compile(REPORTED_APP, "myapp.py", "exec"), example.__dict__)
    transport = httpx.ASGITransport(app=example.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.post("/orders/42")).status_code == 200
    [(exc, tags)] = example.tracker.reports
    assert isinstance(exc, ConnectionError)
    assert tags == {"afterward_task": "myapp.send_invoice"}
    assert example.done == [42]  # the next task still ran


@pytest.mark.anyio
async def test_the_apps_exception_handlers_are_not_called_for_a_task_failure(
    myapp: types.ModuleType,
) -> None:
    """What the page's last section says, for FastAPI and for Starlette with inject."""
    handled: list[BaseException] = []

    async def handler(request: object, exc: Exception) -> JSONResponse:
        handled.append(exc)
        return JSONResponse({"detail": "handled"}, status_code=500)

    myapp.app.add_exception_handler(Exception, handler)
    myapp.app.add_exception_handler(ConnectionError, handler)
    example = run_blocks(PAGE, "on-error", name="myapp_reported")
    exec(compile(REPORTED_APP, "myapp_reported.py", "exec"), example.__dict__)
    example.app.add_exception_handler(Exception, handler)
    example.app.add_exception_handler(ConnectionError, handler)
    for app in (myapp.app, example.app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/orders/42")
        assert response.json() == {"status": "ordered"}
    assert handled == []
    assert len(example.tracker.reports) == 1  # the task did fail
