"""Build the documentation site, API reference included: `python scripts/docs.py [--site-dir DIR]`.

Creates `.venv` and installs afterward with the `docs` extra on first use (see `_venv.py`), then
runs `mkdocs build --strict` (so a broken link, a page missing from the nav or a docstring that
mkdocstrings cannot read fails the build) into `site/`, or into DIR. The build needs no network:
no web fonts, no plugin that fetches anything. `mkdocs serve` from the environment previews it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _venv  # found through the path entry above, on every platform

SITE = _venv.ROOT / "site"


def build_command(python: Path, site_dir: Path) -> list[str]:
    """Return the mkdocs command that builds the site strictly into `site_dir`."""
    return [
        str(python),
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "--clean",
        "--site-dir",
        str(site_dir),
    ]


def main(argv: Sequence[str]) -> int:
    """Bootstrap the environment, build the site, and return mkdocs' exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site-dir", type=Path, default=SITE, help="where to write the site")
    arguments = parser.parse_args(argv)
    python = _venv.ensure(["docs"])
    # Material for MkDocs prints a banner about MkDocs 2.0 on every build; it says nothing about
    # this site.
    os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")
    status = _venv.run(build_command(python, arguments.site_dir.resolve()))
    if status == 0:
        print(f"The site is in {arguments.site_dir}.", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
