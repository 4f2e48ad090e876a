"""Run the core tests against the lowest versions afterward allows: `python scripts/lowest.py`.

Creates `.venv-lowest` (beside `.venv`, never touching it) with the floors of `pyproject.toml`'s
runtime dependencies pinned exactly, installs afterward into it (editable, without resolving its
dependencies again) with the test tools, and runs the test files of the core, which need neither
FastAPI nor a server. Extra arguments are passed to pytest. Like `test.py`, it uses only the
standard library; an install is remembered in a stamp file, so a second run starts at once.
"""

from __future__ import annotations

import sys
import venv
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _venv  # found through the path entry above, on every platform

VENV = _venv.ROOT / ".venv-lowest"

LOWEST = ("starlette==0.40.0", "anyio==4.5.0", "typing_extensions==4.8.0")
"""The floors in `pyproject.toml`'s `dependencies`, pinned: keep the two in step."""

TOOLS = ("pytest>=8.0", "trio>=0.26", "httpx>=0.27")
"""What the core tests need besides afterward's own dependencies."""

TESTS = (
    "tests/test_anyio_seam.py",
    "tests/test_callables.py",
    "tests/test_cancel_in_thread.py",
    "tests/test_concurrency.py",
    "tests/test_events.py",
    "tests/test_hop_anyio.py",
    "tests/test_limiter.py",
    "tests/test_middleware.py",
    "tests/test_policy.py",
    "tests/test_runner.py",
    "tests/test_tasks.py",
)


def ensure(venv_dir: Path = VENV) -> Path:
    """Create `venv_dir` with the lowest dependencies if needed; return its Python."""
    python = _venv.venv_python(venv_dir)
    stamp = venv_dir / _venv.STAMP
    wanted = "\n".join((_venv.pyproject_hash(), *LOWEST, *TOOLS))
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        print(f"Creating {venv_dir.name} ...", flush=True)
        venv.create(venv_dir, with_pip=True, clear=venv_dir.exists())
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    print(f"Installing {', '.join(LOWEST)} ...", flush=True)
    if (
        _venv.run([*pip, *LOWEST, *TOOLS]) != 0
        or _venv.run([*pip, "--no-deps", "--editable", "."]) != 0
    ):
        raise SystemExit(f"Installing into {venv_dir} failed (see pip's output above).")
    stamp.write_text(wanted)
    return python


def main(argv: Sequence[str]) -> int:
    """Bootstrap the environment and run the core tests in it; return pytest's exit code."""
    python = ensure()
    _venv.run([python, "-m", "pip", "list", "--format=freeze"])  # what was tested, in the log
    return _venv.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS, *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
