"""The Starlette examples, and every dependency example of the seed chapter ported with `inject`.

The seed's code blocks are kept below exactly as the FastAPI chapter prints them; `port` changes
only the import line and the route table, so these tests show that the chapter's code runs on
plain Starlette with afterward and nothing else edited.
"""

from __future__ import annotations

import re
import threading
import types
from pathlib import Path
from typing import Any

import httpx
import pytest
from examples import demo, starlette_dependencies, starlette_notification
from starlette.applications import Starlette
from starlette.types import Message, Scope

from seed import SEED_ANNOTATED_PIPE, SEED_DEPENDENCY_VARIANTS

EMAIL = "ada@example.com"


@pytest.fixture
def log_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test in an empty directory, where the examples write their `log.txt`."""
    monkeypatch.chdir(tmp_path)
    return tmp_path / "log.txt"


async def post(app: Starlette, path: str, **params: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post(path, params=params)


# -- examples/starlette_notification.py ---------------------------------------------------


@pytest.mark.anyio
async def test_notification_example_answers_and_writes_the_notification(log_file: Path) -> None:
    response = await post(starlette_notification.app, f"/send-notification/{EMAIL}")
    assert response.status_code == 200
    assert response.json() == {"message": "Notification sent in the background"}
    assert log_file.read_text() == f"notification for {EMAIL}: some notification"


@pytest.mark.anyio
async def test_notification_is_written_only_after_the_response_body_is_sent(
    log_file: Path,
) -> None:
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"/send-notification/{EMAIL}",
        "raw_path": f"/send-notification/{EMAIL}".encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "server": ("test", 80),
        "client": ("127.0.0.1", 12345),
    }
    log_existed_when_body_was_sent: list[bool] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            log_existed_when_body_was_sent.append(log_file.exists())

    await starlette_notification.app(scope, receive, send)
    assert log_existed_when_body_was_sent == [False]
    assert log_file.read_text() == f"notification for {EMAIL}: some notification"


# -- examples/starlette_dependencies.py ---------------------------------------------------


@pytest.mark.anyio
async def test_dependency_example_logs_the_query_then_the_message(log_file: Path) -> None:
    response = await post(starlette_dependencies.app, f"/send-notification/{EMAIL}", q="hello")
    assert response.status_code == 200
    assert response.json() == {"message": "Message sent"}
    assert log_file.read_text() == f"found query: hello\nmessage to {EMAIL}\n"


@pytest.mark.anyio
async def test_dependency_example_without_query_logs_only_the_message(log_file: Path) -> None:
    response = await post(starlette_dependencies.app, f"/send-notification/{EMAIL}")
    assert response.status_code == 200
    assert log_file.read_text() == f"message to {EMAIL}\n"


@pytest.mark.anyio
async def test_dependency_example_appends_across_requests(log_file: Path) -> None:
    await post(starlette_dependencies.app, "/send-notification/a@example.com", q="one")
    await post(starlette_dependencies.app, "/send-notification/b@example.com")
    assert log_file.read_text() == (
        "found query: one\nmessage to a@example.com\nmessage to b@example.com\n"
    )


# -- examples/demo.py ---------------------------------------------------------------------


def test_demo_answers_before_its_tasks_finish_on_a_real_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Deterministic on a slow machine too: the sync task does not finish before the client has
    # printed its answer. (That the answer really comes first is shown in test_e2e_uvicorn.py.)
    answered = threading.Event()
    real_say, real_write_report = demo.Timeline.say, demo.write_report

    def say(self: demo.Timeline, who: str, message: str) -> None:
        real_say(self, who, message)
        if message.startswith("response received"):
            answered.set()

    def write_report(email: str, seconds: float, timeline: demo.Timeline) -> None:
        assert answered.wait(30)
        real_write_report(email, seconds, timeline)

    monkeypatch.setattr(demo.Timeline, "say", say)
    monkeypatch.setattr(demo, "write_report", write_report)
    assert demo.main(sync_seconds=0.05, async_seconds=0.05) == 0
    lines = capsys.readouterr().out.splitlines()
    events = [
        next(i for i, line in enumerate(lines) if marker in line)
        for marker in (
            "response received after",
            "task 1 (write_report) finished",
            "task 2 (send_email) finished",
            "Server stopped.",
        )
    ]
    assert events == sorted(events)
    response_line = lines[events[0]]
    assert '{"message": "Notification for ada@example.com sent in the background"}' in response_line
    assert "the background tasks are not done yet" in lines[events[0] + 1]


# -- the seed chapter's dependency examples, ported --------------------------------------

SEED_VARIANTS = SEED_DEPENDENCY_VARIANTS

# The only lines a port touches.
FASTAPI_IMPORT = "from fastapi import BackgroundTasks, Depends, FastAPI"
STARLETTE_IMPORTS = (
    "from afterward import BackgroundTasks, Depends, inject\n"
    "from starlette.applications import Starlette\n"
    "from starlette.routing import Route"
)
FASTAPI_ROUTE_LINES = ("app = FastAPI()", '@app.post("/send-notification/{email}")')
STARLETTE_ROUTE_TABLE = (
    "app = Starlette(\n"
    '    routes=[Route("/send-notification/{email}", inject(send_notification), '
    'methods=["POST"])]\n'
    ")"
)


def port(fastapi_source: str) -> str:
    """Return the Starlette version of a seed example: new imports, a route table, nothing else."""
    lines = fastapi_source.splitlines()
    for line in (FASTAPI_IMPORT, *FASTAPI_ROUTE_LINES):
        assert lines.count(line) == 1, f"the seed example should have {line!r} once"
    ported = [
        STARLETTE_IMPORTS if line == FASTAPI_IMPORT else line
        for line in lines
        if line not in FASTAPI_ROUTE_LINES
    ]
    return "\n".join([*ported, "", STARLETTE_ROUTE_TABLE, ""])


def load(name: str, source: str) -> Starlette:
    """Execute `source` as a module of its own, as `uvicorn module:app` would, and return `app`."""
    module = types.ModuleType(f"seed_{name.replace('-', '_')}")
    # dont_inherit: the example's annotations stay real objects, not this file's string ones.
    code = compile(source, f"<seed example {name}>", "exec", dont_inherit=True)
    exec(code, module.__dict__)
    app = module.__dict__["app"]
    assert isinstance(app, Starlette)
    return app


def test_the_port_changes_only_the_imports_and_the_route_table() -> None:
    source = SEED_ANNOTATED_PIPE
    ported = port(source)
    removed = set(source.splitlines()) - set(ported.splitlines())
    added = set(ported.splitlines()) - set(source.splitlines())
    assert removed == {FASTAPI_IMPORT, *FASTAPI_ROUTE_LINES}
    assert added == {*STARLETTE_IMPORTS.splitlines(), *STARLETTE_ROUTE_TABLE.splitlines()}


def code_lines(source: str) -> list[str]:
    """Return the non-blank lines of `source`, with afterward's import first (ruff puts it last)."""
    lines = [line for line in source.splitlines() if line.strip()]
    first_party = [line for line in lines if line.startswith("from afterward ")]
    return first_party + [line for line in lines if line not in first_party]


def test_the_dependency_example_file_is_the_ported_seed_example() -> None:
    example = Path(starlette_dependencies.__file__).read_text()
    code = example[example.index('"""', 3) + 3 :]  # after the module docstring
    assert code_lines(code) == code_lines(port(SEED_ANNOTATED_PIPE))


@pytest.mark.anyio
@pytest.mark.parametrize("variant", SEED_VARIANTS)
async def test_seed_dependency_example_runs_on_starlette_with_a_query(
    variant: str, log_file: Path
) -> None:
    app = load(variant, port(SEED_VARIANTS[variant]))
    response = await post(app, f"/send-notification/{EMAIL}", q="hello")
    assert response.status_code == 200
    assert response.json() == {"message": "Message sent"}
    assert log_file.read_text() == f"found query: hello\nmessage to {EMAIL}\n"


@pytest.mark.anyio
@pytest.mark.parametrize("variant", SEED_VARIANTS)
async def test_seed_dependency_example_runs_on_starlette_without_a_query(
    variant: str, log_file: Path
) -> None:
    app = load(variant, port(SEED_VARIANTS[variant]))
    response = await post(app, f"/send-notification/{EMAIL}")
    assert response.status_code == 200
    assert log_file.read_text() == f"message to {EMAIL}\n"


# -- the apps shown in README.md and docs/ ------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED_APPS = [
    (f"{page}#{index}", block)
    for page in ("README.md", "docs/index.md", "docs/tutorial.md")
    for index, block in enumerate(
        re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.DOTALL)
    )
    if "\napp = " in block
]
EXPECTED_LOGS = {
    f"notification for {EMAIL}: some notification",
    f"found query: hello\nmessage to {EMAIL}\n",
}


def test_the_docs_show_the_starlette_and_fastapi_apps() -> None:
    pages = {name.partition("#")[0] for name, _ in DOCUMENTED_APPS}
    assert pages == {"README.md", "docs/index.md", "docs/tutorial.md"}
    assert sum("FastAPI()" in block for _, block in DOCUMENTED_APPS) == 2


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "source"), DOCUMENTED_APPS, ids=[n for n, _ in DOCUMENTED_APPS])
async def test_documented_app_answers_and_runs_its_tasks(
    name: str, source: str, log_file: Path
) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(source, name, "exec", dont_inherit=True), namespace)
    response = await post(namespace["app"], f"/send-notification/{EMAIL}", q="hello")
    assert response.status_code == 200
    assert log_file.read_text() in EXPECTED_LOGS
