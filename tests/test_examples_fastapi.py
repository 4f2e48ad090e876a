"""The FastAPI drop-in examples and the custom-response example, driven as a client would."""

from __future__ import annotations

import types
from pathlib import Path

import httpx
import pytest
from examples import custom_response, fastapi_dependencies, fastapi_notification
from starlette.types import ASGIApp, Message, Scope

pytestmark = pytest.mark.anyio

EMAIL = "ada@example.com"


@pytest.fixture
def log_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test in an empty directory, where the examples write their `log.txt`."""
    monkeypatch.chdir(tmp_path)
    return tmp_path / "log.txt"


async def request(app: ASGIApp, method: str, path: str, **params: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, path, params=params)


async def log_when_the_body_was_sent(app: ASGIApp, method: str, path: str, log: Path) -> bool:
    """Call `app` as a server would; return whether `log` existed when the body was complete."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "server": ("test", 80),
        "client": ("127.0.0.1", 12345),
    }
    existed: list[bool] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            existed.append(log.exists())

    await app(scope, receive, send)
    [result] = existed
    return result


@pytest.mark.parametrize("module", [fastapi_notification, fastapi_dependencies, custom_response])
def test_each_example_says_how_to_run_it(module: types.ModuleType) -> None:
    name = module.__name__.rpartition(".")[2]
    assert f"How to run: uvicorn examples.{name}:app" in (module.__doc__ or "")


# -- examples/fastapi_notification.py -----------------------------------------------------------


async def test_notification_example_answers_and_writes_the_notification(log_file: Path) -> None:
    response = await request(fastapi_notification.app, "POST", f"/send-notification/{EMAIL}")

    assert response.status_code == 200
    assert response.json() == {"message": "Notification sent in the background"}
    assert log_file.read_text() == f"notification for {EMAIL}: some notification"


async def test_notification_example_writes_only_after_the_body_is_sent(log_file: Path) -> None:
    app, path = fastapi_notification.app, f"/send-notification/{EMAIL}"

    assert not await log_when_the_body_was_sent(app, "POST", path, log_file)
    assert log_file.read_text() == f"notification for {EMAIL}: some notification"


# -- examples/fastapi_dependencies.py -----------------------------------------------------------


async def test_dependency_example_logs_the_query_then_the_message(log_file: Path) -> None:
    response = await request(
        fastapi_dependencies.app, "POST", f"/send-notification/{EMAIL}", q="hello"
    )

    assert response.status_code == 200
    assert response.json() == {"message": "Message sent"}
    assert log_file.read_text() == f"found query: hello\nmessage to {EMAIL}\n"


async def test_dependency_example_without_a_query_logs_only_the_message(log_file: Path) -> None:
    response = await request(fastapi_dependencies.app, "POST", f"/send-notification/{EMAIL}")

    assert response.status_code == 200
    assert log_file.read_text() == f"message to {EMAIL}\n"


async def test_dependency_example_appends_across_requests(log_file: Path) -> None:
    await request(fastapi_dependencies.app, "POST", "/send-notification/a@example.com", q="one")
    await request(fastapi_dependencies.app, "POST", "/send-notification/b@example.com")

    assert log_file.read_text() == (
        "found query: one\nmessage to a@example.com\nmessage to b@example.com\n"
    )


# -- examples/custom_response.py ----------------------------------------------------------------


async def test_custom_response_example_sends_the_notification_with_background(
    log_file: Path,
) -> None:
    response = await request(custom_response.app, "POST", f"/send-notification/{EMAIL}")

    assert response.json() == {"message": "Notification sent in the background"}
    assert log_file.read_text() == f"notification for {EMAIL}\n"


async def test_custom_response_example_runs_the_receipt_s_own_task_then_the_attached_one(
    log_file: Path,
) -> None:
    response = await request(custom_response.app, "POST", f"/send-receipt/{EMAIL}")

    assert response.json() == {"message": f"Receipt for {EMAIL} sent"}
    assert log_file.read_text() == f"receipt stored for {EMAIL}\nreceipt mailed to {EMAIL}\n"


async def test_custom_response_example_runs_the_export_task_after_the_last_chunk(
    log_file: Path,
) -> None:
    response = await request(custom_response.app, "GET", "/export")

    assert response.headers["content-type"] == "text/csv"
    assert response.content == b"".join(custom_response.ROWS)
    assert log_file.read_text() == "export of 2 rows downloaded\n"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/send-notification/{EMAIL}"),
        ("POST", f"/send-receipt/{EMAIL}"),
        ("GET", "/export"),
    ],
)
async def test_custom_response_example_writes_only_after_the_body_is_sent(
    method: str, path: str, log_file: Path
) -> None:
    assert not await log_when_the_body_was_sent(custom_response.app, method, path, log_file)
    assert log_file.exists()
