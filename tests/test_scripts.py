"""The bootstrap behind `python scripts/test.py`, `check.py` and `demo.py`.

Creating a real environment needs the network and takes seconds, so `venv.create` and the pip
call are replaced here; what is tested is the decision logic: when to create, when to install,
when a previous install is reused, and what a failure says. The scripts themselves run for real
in CI (`.ci/run` calls them).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load_script(name: str, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Import `scripts/<name>.py` under a private name (`test` would clash with the stdlib)."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # the scripts prepend their folder
    monkeypatch.delitem(sys.modules, "_venv", raising=False)  # each test gets a fresh one
    spec = importlib.util.spec_from_file_location(
        f"_afterward_script_{name}", SCRIPTS / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def venv_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    return load_script("_venv", monkeypatch)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text('[project]\nname = "x"\n')
    return root


def make_python(venv_module: types.ModuleType, venv_dir: Path) -> Path:
    python: Path = venv_module.venv_python(venv_dir)
    python.parent.mkdir(parents=True)
    python.write_text("")
    return python


class Recorder:
    """Stands in for `_venv.run`: records each command and answers with a fixed exit code."""

    def __init__(self, status: int = 0) -> None:
        self.status = status
        self.commands: list[list[str]] = []

    def __call__(self, command: Sequence[Any], *, cwd: Path) -> int:
        self.commands.append([str(part) for part in command])
        return self.status


def test_the_stamp_counts_only_for_the_pyproject_it_was_written_for(
    venv_module: types.ModuleType, project: Path
) -> None:
    venv_dir = project / ".venv"
    venv_dir.mkdir()
    digest = venv_module.pyproject_hash(project)
    assert venv_module.installed_extras(venv_dir, digest) is None  # no stamp yet
    (venv_dir / venv_module.STAMP).write_text(f"{digest}\ndev,test\n")
    assert venv_module.installed_extras(venv_dir, digest) == {"dev", "test"}
    (project / "pyproject.toml").write_text('[project]\nname = "y"\n')
    assert venv_module.installed_extras(venv_dir, venv_module.pyproject_hash(project)) is None


def test_venv_python_is_in_bin_or_in_scripts_on_windows(venv_module: types.ModuleType) -> None:
    assert venv_module.venv_python(Path("v"), windows=False) == Path("v", "bin", "python")
    assert venv_module.venv_python(Path("v"), windows=True) == Path("v", "Scripts", "python.exe")


def test_a_missing_environment_is_created_then_installed_into(
    venv_module: types.ModuleType, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[tuple[Path, bool]] = []

    def create(path: Path, *, with_pip: bool, clear: bool) -> None:
        created.append((path, with_pip))
        make_python(venv_module, path)

    monkeypatch.setattr(venv_module.venv, "create", create)
    recorder = Recorder()
    monkeypatch.setattr(venv_module, "run", recorder)
    venv_dir = project / ".venv"
    python = venv_module.ensure(["test"], root=project, venv_dir=venv_dir)
    assert created == [(venv_dir, True)]
    assert python == venv_module.venv_python(venv_dir)
    assert recorder.commands == [
        [str(python), "-m", "pip", "install", "--quiet", "--editable", ".[test]"]
    ]


def test_an_environment_installed_for_the_same_pyproject_is_reused_without_pip(
    venv_module: types.ModuleType, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv_dir = project / ".venv"
    make_python(venv_module, venv_dir)
    recorder = Recorder()
    monkeypatch.setattr(venv_module, "run", recorder)
    venv_module.ensure(["test", "dev"], root=project, venv_dir=venv_dir)
    venv_module.ensure(["dev", "test"], root=project, venv_dir=venv_dir)
    assert len(recorder.commands) == 1
    assert recorder.commands[0][-1] == ".[test,dev]"


def test_extras_already_installed_are_not_installed_again(
    venv_module: types.ModuleType, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv_dir = project / ".venv"
    make_python(venv_module, venv_dir)
    recorder = Recorder()
    monkeypatch.setattr(venv_module, "run", recorder)
    venv_module.ensure(["test", "dev"], root=project, venv_dir=venv_dir)  # check.py
    venv_module.ensure(["test"], root=project, venv_dir=venv_dir)  # then test.py: nothing to do
    venv_module.ensure(["demo"], root=project, venv_dir=venv_dir)  # demo.py: only its extra
    venv_module.ensure(["dev"], root=project, venv_dir=venv_dir)  # still recorded
    assert [command[-1] for command in recorder.commands] == [".[test,dev]", ".[demo]"]


def test_an_edited_pyproject_triggers_a_new_install(
    venv_module: types.ModuleType, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv_dir = project / ".venv"
    make_python(venv_module, venv_dir)
    recorder = Recorder()
    monkeypatch.setattr(venv_module, "run", recorder)
    venv_module.ensure(["test", "dev"], root=project, venv_dir=venv_dir)
    (project / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "2"\n')
    venv_module.ensure(["test"], root=project, venv_dir=venv_dir)
    venv_module.ensure(["dev"], root=project, venv_dir=venv_dir)  # not installed for this one
    assert [command[-1] for command in recorder.commands] == [".[test,dev]", ".[test]", ".[dev]"]


def test_a_failed_install_stops_with_advice_and_is_retried_next_time(
    venv_module: types.ModuleType, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv_dir = project / ".venv"
    make_python(venv_module, venv_dir)
    recorder = Recorder(status=1)
    monkeypatch.setattr(venv_module, "run", recorder)
    with pytest.raises(SystemExit, match="Installing the dependencies failed"):
        venv_module.ensure(["test"], root=project, venv_dir=venv_dir)
    recorder.status = 0
    venv_module.ensure(["test"], root=project, venv_dir=venv_dir)
    assert len(recorder.commands) == 2


def test_an_environment_that_cannot_be_created_says_what_to_install(
    venv_module: types.ModuleType, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def create(path: Path, *, with_pip: bool, clear: bool) -> None:
        raise OSError("ensurepip is not available")

    monkeypatch.setattr(venv_module.venv, "create", create)
    with pytest.raises(SystemExit, match="python3-venv"):
        venv_module.ensure(["test"], root=project, venv_dir=project / ".venv")


def test_a_python_older_than_3_10_is_refused_with_the_version_needed(
    venv_module: types.ModuleType, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(venv_module, "MINIMUM_PYTHON", (99, 0))
    with pytest.raises(SystemExit, match=r"needs Python 99\.0 or newer"):
        venv_module.ensure(["test"], root=project, venv_dir=project / ".venv")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"======== 80 passed in 0.85s ========", "======== 80 passed in 0.85s ========"),
        (b"80 passed, 2 skipped in 1.20s", "80 passed, 2 skipped in 1.20s"),
        (
            b"\x1b[31m\x1b[1m1 failed\x1b[0m, \x1b[32m79 passed\x1b[0m in 2.01s",
            "1 failed, 79 passed in 2.01s",
        ),
        (b"=== no tests ran in 0.01s ===", "=== no tests ran in 0.01s ==="),
        (b"1 error in 0.32s", "1 error in 0.32s"),
        (b"tests/test_inject.py ........  [ 63%]", None),
        (b"collected 80 items", None),
    ],
)
def test_the_test_script_finds_pytests_closing_line(
    line: bytes, expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    test_script = load_script("test", monkeypatch)
    assert test_script.closing_line(line) == expected
