"""The project's virtual environment, shared by `test.py`, `check.py` and `demo.py`.

Each script calls `ensure(extras)`: it creates `.venv` at the repository root with the standard
library's `venv` if there is none, installs afterward into it (editable) with the extras the script
needs, and returns the path of the environment's Python. An install is remembered in a stamp file
inside `.venv`: the hash of `pyproject.toml` and the extras installed with it. A run whose extras
are already installed for the same `pyproject.toml` starts at once (so `test.py` after `check.py`
installs nothing); an edit to the dependencies triggers a new install.

Only the standard library is used: the scripts must work on a fresh machine with nothing but
Python, on Linux, macOS and Windows.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "ROOT",
    "STAMP",
    "VENV",
    "ensure",
    "installed_extras",
    "pyproject_hash",
    "run",
    "venv_python",
]

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: every command runs from here."""

VENV = ROOT / ".venv"
"""The project's virtual environment."""

MINIMUM_PYTHON = (3, 10)


def venv_python(venv_dir: Path = VENV, *, windows: bool = os.name == "nt") -> Path:
    """Return the path of the Python executable inside `venv_dir`."""
    if windows:
        return venv_dir / "Scripts" / "python.exe"
    return venv_dir / "bin" / "python"


STAMP = ".afterward-install"
"""The file in the environment that records what was installed, for which `pyproject.toml`."""


def pyproject_hash(root: Path = ROOT) -> str:
    """Return the SHA-256 of `pyproject.toml`: an install is valid for this content only."""
    return hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()


def installed_extras(venv_dir: Path, digest: str) -> frozenset[str] | None:
    """Return the extras installed for the `pyproject.toml` with hash `digest`, or None."""
    try:
        recorded, _, extras = (venv_dir / STAMP).read_text().partition("\n")
    except OSError:
        return None
    if recorded != digest:
        return None
    return frozenset(extra for extra in extras.strip().split(",") if extra)


def ensure(extras: Sequence[str], *, root: Path = ROOT, venv_dir: Path = VENV) -> Path:
    """Create the environment if needed, install afterward with `extras`, return its Python.

    Nothing is installed when the stamp says `extras` (or more) were installed for the same
    `pyproject.toml`.

    Raises:
        SystemExit: the running Python is too old, or the environment cannot be created or
            installed into (with a message saying what to do).
    """
    if sys.version_info < MINIMUM_PYTHON:
        raise SystemExit(
            f"afterward needs Python {'.'.join(map(str, MINIMUM_PYTHON))} or newer; this is "
            f"{sys.version.split()[0]} ({sys.executable}). Run the script with a newer python."
        )
    python = venv_python(venv_dir)
    if not python.exists():
        _say(f"Creating the virtual environment {_relative(venv_dir, root)} ...")
        try:
            # `clear` only when a broken environment (a folder without its Python) is in the way.
            venv.create(venv_dir, with_pip=True, clear=venv_dir.exists())
        except (OSError, subprocess.CalledProcessError) as exc:
            raise SystemExit(
                f"Could not create {venv_dir}: {exc}. On Debian and Ubuntu, install the "
                f"python3-venv package (apt-get install python3-venv) and run the script again."
            ) from exc
    digest = pyproject_hash(root)
    installed = installed_extras(venv_dir, digest)
    if installed is not None and installed.issuperset(extras):
        return python
    target = f".[{','.join(extras)}]" if extras else "."
    _say(f"Installing afterward{target[1:]} (editable) into {_relative(venv_dir, root)} ...")
    command = [str(python), "-m", "pip", "install", "--quiet", "--editable", target]
    if run(command, cwd=root) != 0:
        raise SystemExit(
            "Installing the dependencies failed (see pip's output above). Check the network "
            f"access to the package index, then run the script again; delete {venv_dir} to "
            f"start from scratch."
        )
    everything = (installed or frozenset()).union(extras)
    (venv_dir / STAMP).write_text(f"{digest}\n{','.join(sorted(everything))}\n")
    return python


def run(command: Sequence[str | os.PathLike[str]], *, cwd: Path = ROOT) -> int:
    """Run `command` in `cwd`, its output going to ours, and return its exit code."""
    sys.stdout.flush()
    return subprocess.call([os.fspath(part) for part in command], cwd=cwd)


def _say(message: str) -> None:
    print(message, flush=True)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
