"""Every code block of docs/fastapi.md, run as written.

Each block is preceded by `<!-- block: NAME -->`. A test executes the blocks a reader would put
together (most build on the `swap` app) in one module namespace, then drives the app.

No `from __future__ import annotations`: the endpoints defined here get their annotations set as
objects, which FastAPI reads as they are.
"""

import re
import types
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI

import afterward
from afterward.fastapi import OptOutWarning

DOC = Path(__file__).resolve().parent.parent / "docs" / "fastapi.md"
BLOCK = re.compile(r"<!-- block: (?P<name>[\w-]+) -->\n```python\n(?P<code>.*?)```", re.DOTALL)
BLOCKS = {match["name"]: match["code"] for match in BLOCK.finditer(DOC.read_text())}
TESTED = {
    "swap",
    "override",
    "tasks_from",
    "testing",
    "mixing",
    "isinstance",
    "trap",
    "check_app",
    "lifespan",
    "streaming",
}


def run_blocks(*names: str) -> dict[str, Any]:
    """Execute the named blocks, in order, in one fresh module namespace, and return it."""
    module = types.ModuleType("docs_fastapi")
    for name in names:
        exec(compile(BLOCKS[name], f"<docs/fastapi.md: {name}>", "exec"), module.__dict__)
    return module.__dict__


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_python_block_of_the_page_is_named_and_tested() -> None:
    assert DOC.read_text().count("```python") == len(BLOCKS)
    assert set(BLOCKS) == TESTED


@pytest.mark.anyio
async def test_the_import_swap_writes_the_notification_after_responding(in_tmp_path: Path) -> None:
    namespace = run_blocks("swap")

    async with client_for(namespace["app"]) as client:
        response = await client.post("/send-notification/ada@example.com")

    assert response.json() == {"message": "Notification sent in the background"}
    assert (in_tmp_path / "log.txt").read_text() == (
        "notification for ada@example.com: some notification"
    )


def fail() -> None:
    raise RuntimeError("task failed")


def add_failing_route(app: FastAPI, annotation: Any) -> None:
    async def failing(background_tasks: Any) -> None:
        background_tasks.add_task(fail)

    failing.__annotations__["background_tasks"] = annotation
    app.post("/failing")(failing)


@pytest.mark.anyio
async def test_the_override_reports_a_failing_task(capsys: pytest.CaptureFixture[str]) -> None:
    namespace = run_blocks("swap", "override")
    add_failing_route(namespace["app"], namespace["BackgroundTasks"])

    async with client_for(namespace["app"]) as client:
        await client.post("/failing")

    assert capsys.readouterr().out == (f"{__name__}.fail failed: RuntimeError('task failed')\n")


@pytest.mark.anyio
async def test_the_tasks_from_alias_has_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    namespace = run_blocks("swap", "override", "tasks_from")
    app: FastAPI = namespace["app"]
    app.dependency_overrides.clear()  # only the alias configures, here
    add_failing_route(app, namespace["BackgroundTasks"])
    limiters: list[Any] = []

    async def limiter(background_tasks: Any) -> None:
        limiters.append(background_tasks.limiter)

    limiter.__annotations__["background_tasks"] = namespace["BackgroundTasks"]
    app.post("/limiter")(limiter)

    async with client_for(app) as client:
        await client.post("/failing")
        await client.post("/limiter")

    assert "fail failed: RuntimeError('task failed')" in capsys.readouterr().out
    assert limiters == [namespace["limiter"]]
    assert isinstance(limiters[0], anyio.CapacityLimiter)


@pytest.mark.filterwarnings("ignore::starlette.exceptions.StarletteDeprecationWarning")
def test_the_testing_example_passes_and_the_task_ran(in_tmp_path: Path) -> None:
    namespace = run_blocks("swap", "testing")

    namespace["test_the_notification_is_queued"]()

    assert namespace["app"].dependency_overrides == {}
    assert (in_tmp_path / "log.txt").exists()  # the override's collector ran


@pytest.mark.anyio
async def test_mixing_runs_our_tasks_then_the_library_s() -> None:
    namespace = run_blocks("swap", "mixing")

    async with client_for(namespace["app"]) as client:
        await client.post("/mixed")

    assert namespace["events"] == ["ours, first", "ours, second", "library"]


@pytest.mark.anyio
async def test_mixing_declared_the_other_way_round_runs_the_library_s_task_first() -> None:
    """The page's claim about order, checked the other way round."""
    from typing import Annotated

    from fastapi import Depends

    namespace = run_blocks("swap", "mixing")
    app: FastAPI = namespace["app"]

    async def reversed_(_: Any, background_tasks: Any) -> None:
        background_tasks.add_task(namespace["events"].append, "ours")

    reversed_.__annotations__.update(
        _=Annotated[None, Depends(namespace["library_dependency"])],
        background_tasks=namespace["BackgroundTasks"],
    )
    app.post("/reversed")(reversed_)
    async with client_for(app) as client:
        await client.post("/reversed")

    assert namespace["events"] == ["library", "ours"]


def test_isinstance_needs_the_class() -> None:
    namespace = run_blocks("isinstance")

    assert namespace["tasks"].stop_on_error
    with pytest.raises(TypeError):
        isinstance(namespace["tasks"], namespace["BackgroundTasks"])


@pytest.mark.anyio
async def test_the_trap_gets_fastapi_s_collector_and_check_app_catches_it() -> None:
    namespace = run_blocks("swap", "check_app")
    namespace["test_every_collector_is_afterward_s"]()  # the swap app passes

    namespace = run_blocks("swap", "trap", "check_app")
    with pytest.raises(AssertionError):
        namespace["test_every_collector_is_afterward_s"]()
    with pytest.warns(OptOutWarning, match=r"quiet \(route POST /quiet\)"):
        afterward.fastapi.check_app(namespace["app"])


@pytest.mark.anyio
async def test_the_lifespan_warns_at_startup_about_the_trap() -> None:
    namespace = run_blocks("lifespan")
    app: FastAPI = namespace["app"]

    @app.post("/quiet")
    async def quiet(background_tasks: afterward.BackgroundTasks) -> None:
        pass

    with pytest.warns(OptOutWarning, match="from afterward.fastapi import BackgroundTasks"):
        async with app.router.lifespan_context(app):
            pass


@pytest.mark.anyio
async def test_the_streaming_export_runs_its_task_once_delivered(
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace = run_blocks("swap", "streaming")

    async with client_for(namespace["app"]) as client:
        response = await client.get("/export")

    assert response.text == "row 0\nrow 1\nrow 2\n"
    assert capsys.readouterr().out == "export delivered\n"
