"""docs/scaling.md: its code is the tested example's, its backend sketch runs, its messages hold."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import anyio
import pytest

from docs_blocks import blocks, run_blocks

sys.path.insert(0, str(Path(__file__).resolve().parent / "apps"))

import celery_tasks

from afterward import BackgroundTasks
from afterward.celery import CeleryBackend

ROOT = Path(__file__).resolve().parent.parent
PAGE = "scaling.md"


@pytest.mark.parametrize("module", ["worker", "tasks", "web"])
def test_the_page_shows_the_example_s_code_exactly(module: str) -> None:
    language, code = blocks(PAGE)[module]
    assert language == "python"
    assert code == (ROOT / "examples" / "celery_app" / f"{module}.py").read_text(encoding="utf-8")


def test_the_two_commands_are_the_ones_the_example_test_runs() -> None:
    _, commands = blocks(PAGE)["commands"]
    assert commands.splitlines() == [
        "celery -A examples.celery_app.worker worker --loglevel=INFO",
        "uvicorn examples.celery_app.web:app",
    ]
    test = (ROOT / "tests" / "test_celery_example.py").read_text(encoding="utf-8")
    assert '"-A", "examples.celery_app.worker", "worker"' in test
    assert '"uvicorn", "examples.celery_app.web:app"' in test


def test_the_backend_sketch_runs(capsys: pytest.CaptureFixture[str]) -> None:
    module = run_blocks(PAGE, "backend")
    tasks = module.tasks
    with pytest.raises(TypeError, match="positional arguments only"):
        tasks.add_task(print, "hello", end="")

    async def refuse_async() -> None:
        """An async function."""

    with pytest.raises(TypeError, match="cannot run async functions"):
        tasks.add_task(refuse_async)
    anyio.run(tasks)
    assert capsys.readouterr().out == "would run builtins.print ('hello',)\n"


def test_the_argument_errors_shown_are_the_ones_raised() -> None:
    _, shown = blocks(PAGE)["arguments"]
    backend = CeleryBackend(celery_tasks.make_app("redis://127.0.0.1:1/0"))

    class User:
        def __repr__(self) -> str:
            return "<User 42>"

    for value, line in zip([("new", "pro"), User()], shown.splitlines(), strict=True):
        with pytest.raises(TypeError) as info:
            BackgroundTasks(backend=backend).add_task(celery_tasks.record, "k", value)  # type: ignore[arg-type]
        # The page names a task and a parameter of its own; the rest of the message is the same.
        expected = re.sub(
            r"Argument '\w+' of [\w.]+",
            "Argument 'value' of celery_tasks.record",
            line.removeprefix("TypeError: ").removesuffix(" (...)"),
        )
        assert str(info.value).startswith(expected)


def test_the_api_reference_covers_afterward_celery() -> None:
    import afterward.celery
    from test_docs_site import reference_members

    assert sorted(reference_members("afterward.celery")) == sorted(afterward.celery.__all__)
