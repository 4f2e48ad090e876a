"""Run the linters and the type checker: `python scripts/check.py`.

Creates `.venv` and installs afterward with the test and dev dependencies on first use (mypy needs
the test dependencies to check the tests), then runs `ruff check`, `ruff format --check` and
`mypy` (strict; the files and options are in `pyproject.toml`). Every check runs even if an
earlier one fails; the exit code is non-zero if any failed. `ruff format .` fixes formatting.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _venv  # found through the path entry above, on every platform

CHECKS = {
    "ruff check": ["-m", "ruff", "check", "."],
    "ruff format": ["-m", "ruff", "format", "--check", "."],
    "mypy": ["-m", "mypy"],
}


def main() -> int:
    """Bootstrap the environment, run every check, and return the exit code."""
    python = _venv.ensure(["test", "dev"])
    failed: list[str] = []
    for name, arguments in CHECKS.items():
        print(f"--- {name}", flush=True)
        if _venv.run([python, *arguments]) != 0:
            failed.append(name)
    if failed:
        print(f"Failed: {', '.join(failed)}.", flush=True)
        return 1
    print(f"All checks passed: {', '.join(CHECKS)}.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
