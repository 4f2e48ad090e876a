"""Run the reliability suite at soak size and print its figures: `python scripts/soak.py`.

The test suite (`python scripts/test.py`, CI) runs `tests/reliability/` at a size that keeps it
to about a minute and a half. This runs the same tests with `RELIABILITY_SOAK=1`: 20,000 requests
at concurrency 100 per load round (three rounds per mode), 10,000 requests in the fault and
isolation tests. It takes several minutes. Each test's figures are collected as JSON lines (the
`RELIABILITY_FIGURES` file) and printed at the end, one line per test and mode, for
`docs/reliability.md`.

Extra arguments go to pytest, e.g. `python scripts/soak.py -k load` for the load test only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _venv  # found through the path entry above, on every platform


def main(argv: Sequence[str]) -> int:
    """Run tests/reliability at soak size; print the figures; return pytest's exit code."""
    python = _venv.ensure(["test"])
    with tempfile.TemporaryDirectory() as directory:
        figures = Path(directory) / "figures.jsonl"
        env = {**os.environ, "RELIABILITY_SOAK": "1", "RELIABILITY_FIGURES": str(figures)}
        command = [str(python), "-m", "pytest", "tests/reliability", "-q", "-p", "no:cacheprovider"]
        status = subprocess.call([*command, *argv], cwd=_venv.ROOT, env=env)
        rows = (
            [json.loads(line) for line in figures.read_text().splitlines()]
            if figures.exists()
            else []
        )
    print(f"\nFigures ({os.cpu_count()} CPUs):")
    for row in rows:
        test, mode = row.pop("test"), row.pop("mode")
        print(f"  {test:<24} {mode:<11} {json.dumps(row)}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
