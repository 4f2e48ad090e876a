"""Run the whole test suite under branch coverage: `python scripts/test.py [pytest arguments]`.

Creates `.venv` and installs afterward with its test dependencies on first use (see `_venv.py`),
then runs `coverage run -m pytest`, `coverage combine` and `coverage report`. Coverage must reach
the `fail_under` set in `pyproject.toml` when the whole suite runs; when pytest arguments are
given (a subset of the tests, usually), the report is shown but not enforced. The exit code is
non-zero if a test failed, no test ran, or coverage is too low.

pytest's closing line ("N passed in Xs") is printed again at the very end, after the coverage
table, so the outcome is the last thing on the screen.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _venv  # found through the path entry above, on every platform

_ANSI = re.compile(rb"\x1b\[[0-9;]*m")
_OUTCOME = re.compile(
    r"\b(\d+ (passed|failed|errors?|skipped|deselected|xfailed|xpassed|warnings?)|no tests ran)\b"
    r".* in \d+(\.\d+)?s\b"
)


def closing_line(line: bytes) -> str | None:
    """Return `line` as text if it is pytest's closing summary line, else None."""
    text = _ANSI.sub(b"", line).decode("utf-8", "replace").strip()
    return text if _OUTCOME.search(text) else None


def run_pytest(python: Path, pytest_args: Sequence[str]) -> tuple[int, str | None]:
    """Run pytest under coverage, echoing its output live; return (exit code, closing line)."""
    command = [str(python), "-m", "coverage", "run", "-m", "pytest"]
    if sys.stdout.isatty():
        command.append("--color=yes")  # its output goes through a pipe, so it cannot tell
    command.extend(pytest_args)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
    sys.stdout.flush()
    process = subprocess.Popen(
        command, cwd=_venv.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    # stdout=PIPE with the default buffering is a BufferedReader, whose read1 returns what is there.
    stream = cast(io.BufferedReader, process.stdout)
    out = sys.stdout.buffer
    last: str | None = None
    partial = b""
    try:
        while chunk := stream.read1(65536):
            out.write(chunk)
            out.flush()
            *lines, partial = (partial + chunk).split(b"\n")
            for line in lines:
                last = closing_line(line) or last
        if partial:
            last = closing_line(partial) or last
        return process.wait(), last
    except KeyboardInterrupt:
        process.wait()  # pytest got the same Ctrl+C; let it print what it has
        raise


def main(argv: Sequence[str]) -> int:
    """Bootstrap the environment, run the tests under coverage, and return the exit code."""
    python = _venv.ensure(["test"])
    _venv.run([python, "-m", "coverage", "erase"])
    status, last = run_pytest(python, argv)
    # A subset of the tests (any pytest argument) cannot cover everything, and may not import
    # afterward at all: then the report is shown for information and never fails the run.
    enforce = not argv
    coverage = _venv.run([python, "-m", "coverage", "combine", "--quiet"])
    if coverage == 0:
        report = [str(python), "-m", "coverage", "report"]
        coverage = _venv.run(report if enforce else [*report, "--fail-under=0"])
    if not enforce:
        coverage = 0
    print()
    if last is not None:
        print(last)
    else:
        print(f"pytest did not print its summary line (exit code {status}).")
    if status == 0 and coverage != 0:
        print("The tests passed, but the coverage check failed (see above).")
    sys.stdout.flush()
    return status or coverage


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
