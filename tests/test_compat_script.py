"""The logic of `scripts/compat.py`: the import rewrite, the file selection, and the verdict.

The job itself (download, install, run the upstream suites) runs for real in CI; these tests
check the parts that decide what a run means, on small inputs made here.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "compat.py"

REWRITES = {
    ("fastapi", "BackgroundTasks"): "afterward.fastapi",
    ("starlette.background", "BackgroundTask"): "afterward",
    ("starlette.background", "BackgroundTasks"): "afterward",
}


@pytest.fixture(scope="module")
def compat() -> Iterator[types.ModuleType]:
    name = "_afterward_script_compat"
    saved = list(sys.path)  # the script prepends its folder
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path[:] = saved
        del sys.modules[name]


def rewrite(compat: types.ModuleType, source: str) -> str:
    result: str = compat.rewrite_imports(textwrap.dedent(source), REWRITES, path="t.py")
    return result


def test_rewrite_moves_only_the_background_names_to_afterward(compat: types.ModuleType) -> None:
    assert rewrite(compat, "from fastapi import BackgroundTasks, Depends, FastAPI\n") == (
        "from fastapi import Depends, FastAPI\nfrom afterward.fastapi import BackgroundTasks\n"
    )


def test_rewrite_of_a_multiline_import_keeps_the_following_line_numbers(
    compat: types.ModuleType,
) -> None:
    source = """\
        from fastapi import (
            BackgroundTasks,
            Depends,
            FastAPI,
        )
        x = 1
    """
    result = rewrite(compat, source).splitlines()
    assert result[:2] == [
        "from fastapi import Depends, FastAPI",
        "from afterward.fastapi import BackgroundTasks",
    ]
    assert result[5] == "x = 1"


def test_rewrite_keeps_aliases_indentation_and_other_modules(compat: types.ModuleType) -> None:
    source = """\
        def f():
            from starlette.background import BackgroundTask as Task, BackgroundTasks
            from fastapi.responses import JSONResponse
    """
    assert rewrite(compat, source) == (
        "def f():\n"
        "    from afterward import BackgroundTask as Task\n"
        "    from afterward import BackgroundTasks\n"
        "    from fastapi.responses import JSONResponse\n"
    )


def test_rewrite_leaves_a_file_without_background_imports_unchanged(
    compat: types.ModuleType,
) -> None:
    source = "from fastapi import Depends  # a comment\nimport fastapi\n"
    assert rewrite(compat, source) == source


def test_rewrite_refuses_an_attribute_spelling_it_cannot_change(
    compat: types.ModuleType,
) -> None:
    with pytest.raises(compat.RewriteError, match=r"t\.py:2: 'fastapi\.BackgroundTasks'"):
        rewrite(compat, "import fastapi\ntasks = fastapi.BackgroundTasks()\n")


def test_rewrite_refuses_an_import_sharing_its_line(compat: types.ModuleType) -> None:
    with pytest.raises(compat.RewriteError, match="shares its line"):
        rewrite(compat, "import os; from fastapi import BackgroundTasks\n")


def test_a_file_mentioning_background_tasks_must_be_selected_or_excluded(
    compat: types.ModuleType, tmp_path: Path
) -> None:
    files = {
        "tests/test_selected.py": "BackgroundTasks",
        "tests/sub/test_in_selected_folder.py": "background",
        "tests/test_excluded.py": "background thread",
        "tests/test_new.py": "from fastapi import BackgroundTasks",
        "tests/test_unrelated.py": "x = 1",
        "docs_src/tutorial.py": "BackgroundTasks",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    suite = compat.Suite(
        project="p",
        rewrites=REWRITES,
        selected=("tests/test_selected.py", "tests/sub"),
        sources=("docs_src",),
        excluded={"tests/test_excluded.py": "not a task"},
    )
    assert compat.unclassified(tmp_path, suite) == ["tests/test_new.py"]


def make_run(compat: types.ModuleType, outcomes: dict[str, str], status: int = 1) -> object:
    suite = compat.Suite("p", REWRITES, ("tests/test_a.py",), (), {})
    results = {f"p:{node}": {"outcome": o, "message": ""} for node, o in outcomes.items()}
    return compat.Run(suite, status, Path("p.log"), results)


def test_verdict_accepts_only_the_listed_failures(compat: types.ModuleType) -> None:
    expected = {"p:tests/test_a.py::t1": compat.Expected("why", "anchor")}
    run = make_run(compat, {"tests/test_a.py::t1": "failed", "tests/test_a.py::t2": "passed"})
    verdict = compat.judge([run], expected)
    assert verdict.ok
    assert verdict.expected_failures == ["p:tests/test_a.py::t1"]
    assert verdict.counts == {"failed": 1, "passed": 1}


def test_verdict_fails_on_an_unlisted_failure_or_error(compat: types.ModuleType) -> None:
    run = make_run(compat, {"tests/test_a.py::t1": "failed", "tests/test_a.py::t2": "error"})
    verdict = compat.judge([run], {})
    assert not verdict.ok
    assert verdict.unexpected_failures == ["p:tests/test_a.py::t1", "p:tests/test_a.py::t2"]


def test_verdict_fails_when_an_expected_difference_passes_or_is_gone(
    compat: types.ModuleType,
) -> None:
    expected = {
        "p:tests/test_a.py::t1": compat.Expected("why", "anchor"),
        "p:tests/test_a.py::renamed": compat.Expected("why", "anchor"),
    }
    verdict = compat.judge([make_run(compat, {"tests/test_a.py::t1": "passed"})], expected)
    assert not verdict.ok
    assert verdict.unexpected_passes == ["p:tests/test_a.py::t1"]
    assert verdict.not_collected == ["p:tests/test_a.py::renamed"]


def test_verdict_fails_when_a_selected_file_runs_nothing_or_pytest_breaks(
    compat: types.ModuleType,
) -> None:
    verdict = compat.judge([make_run(compat, {}, status=2)], {})
    assert not verdict.ok
    assert [p.split(" ")[0] for p in verdict.problems] == ["pytest", "p:tests/test_a.py"]


def test_every_expected_difference_links_to_a_section_of_the_compatibility_page(
    compat: types.ModuleType,
) -> None:
    page = (SCRIPT.parent.parent / "docs" / "compatibility.md").read_text(encoding="utf-8")
    # The anchors mkdocs' toc extension gives `## ` headings: lower case, words joined by '-'.
    sections = {
        "-".join(re.sub(r"[^\w\s-]", "", line[3:]).lower().split())
        for line in page.splitlines()
        if line.startswith("## ")
    }
    links = {expected.link for expected in compat.EXPECTED.values()}
    assert links
    assert {link.partition("#")[0] for link in links} == {"docs/compatibility.md"}
    assert {link.partition("#")[2] for link in links} <= sections
