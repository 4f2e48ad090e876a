"""docs/reliability.md keeps up with the suite: its commands exist, and it names every test file."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: docs_blocks

from docs_blocks import DOCS, blocks

HERE = Path(__file__).resolve().parent
PAGE = (DOCS / "reliability.md").read_text(encoding="utf-8")


def test_the_commands_on_the_page_are_the_ones_that_run_the_suite() -> None:
    commands = {label: code.strip() for label, (_, code) in blocks("reliability.md").items()}
    assert commands == {
        "ci-command": "python3 scripts/test.py tests/reliability -q",
        "soak-command": "python3 scripts/soak.py",
    }
    assert (DOCS.parent / "scripts" / "soak.py").is_file()


def test_the_page_names_every_test_file_of_the_suite() -> None:
    files = sorted(path.name for path in HERE.glob("test_reliability_*.py"))
    missing = [name for name in files if name != Path(__file__).name and f"`{name}`" not in PAGE]
    assert missing == []


def test_the_soak_figures_are_filled_in() -> None:
    assert "SOAK_" not in PAGE
    assert "THREADS_" not in PAGE
