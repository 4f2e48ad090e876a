"""The documentation site: `scripts/docs.py`, the nav, and the API reference's coverage.

The real build (`python scripts/docs.py`, mkdocs in strict mode) runs in CI; here, what can be
checked without the `docs` extra installed.
"""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Any

import pytest

import afterward
import afterward.fastapi
from docs_blocks import DOCS
from test_scripts import load_script

ROOT = DOCS.parent


def nav_pages() -> list[str]:
    """The pages named in mkdocs.yml's nav (read as text: PyYAML is not a test dependency)."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text.split("\nnav:\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^  - [^:]+: (\S+\.md)$", nav, re.MULTILINE)


def test_every_page_in_docs_is_in_the_nav() -> None:
    pages = sorted(path.name for path in DOCS.glob("*.md"))
    assert set(pages) <= set(nav_pages())


def test_the_nav_holds_the_pages_of_issue_5() -> None:
    pages = nav_pages()
    wanted = [
        "index.md",
        "tutorial.md",
        "fastapi.md",
        "testing.md",
        "logging.md",
        "semantics.md",
        "compatibility.md",
        "api.md",
    ]
    assert [page for page in pages if page in wanted] == wanted


def reference_members(module: str) -> list[str]:
    """The members the API page asks mkdocstrings to render for `module`."""
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    block = text.split(f"::: {module}\n", 1)[1].split(":::", 1)[0]
    return re.findall(r"^        - (\w+)$", block, re.MULTILINE)


@pytest.mark.parametrize("module", [afterward, afterward.fastapi], ids=lambda m: m.__name__)
def test_the_api_reference_covers_the_whole_public_surface(module: types.ModuleType) -> None:
    assert sorted(reference_members(module.__name__)) == sorted(module.__all__)


def test_the_site_is_not_committed() -> None:
    assert "site/" in (ROOT / ".gitignore").read_text().splitlines()


class Recorder:
    def __init__(self) -> None:
        self.extras: list[list[str]] = []
        self.commands: list[list[str]] = []

    def ensure(self, extras: list[str]) -> Path:
        self.extras.append(extras)
        return Path("/venv/bin/python")

    def run(self, command: list[Any]) -> int:
        self.commands.append([str(part) for part in command])
        return 0


def test_the_script_installs_the_docs_extra_and_builds_strictly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NO_MKDOCS_2_WARNING", "1")  # what main sets, undone after the test
    script = load_script("docs", monkeypatch)
    recorder = Recorder()
    monkeypatch.setattr(script._venv, "ensure", recorder.ensure)
    monkeypatch.setattr(script._venv, "run", recorder.run)
    assert script.main(["--site-dir", str(tmp_path / "out")]) == 0
    assert recorder.extras == [["docs"]]
    [command] = recorder.commands
    assert command[:4] == ["/venv/bin/python", "-m", "mkdocs", "build"]
    assert "--strict" in command
    assert command[command.index("--site-dir") + 1] == str(tmp_path / "out")


def test_the_script_builds_into_site_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_MKDOCS_2_WARNING", "1")  # what main sets, undone after the test
    script = load_script("docs", monkeypatch)
    recorder = Recorder()
    monkeypatch.setattr(script._venv, "ensure", recorder.ensure)
    monkeypatch.setattr(script._venv, "run", recorder.run)
    script.main([])
    [command] = recorder.commands
    assert command[command.index("--site-dir") + 1] == str(ROOT / "site")
