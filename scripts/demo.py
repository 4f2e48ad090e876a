"""Run the demo: `python scripts/demo.py`.

Creates `.venv` and installs afterward with the demo dependencies (uvicorn, httpx) on first use,
then runs `examples/demo.py`: a real uvicorn server answers a request at once while the background
tasks it queued run afterwards, with a timestamp on every step.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _venv  # found through the path entry above, on every platform


def main(argv: list[str]) -> int:
    """Bootstrap the environment, run the demo, and return its exit code."""
    python = _venv.ensure(["demo"])
    return _venv.run([python, _venv.ROOT / "examples" / "demo.py", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
