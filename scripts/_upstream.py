"""Prepare an upstream sdist's tests to run on afterward (used by `scripts/compat.py`).

`unpack` extracts the tests of an sdist, `prepare` changes their imports of `BackgroundTask(s)`
to afterward's (`rewrite_imports`, which refuses any spelling it cannot change), and
`unclassified` lists the files that mention background tasks but are neither selected nor
excluded. Standard library only.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

__all__ = ["RewriteError", "Suite", "prepare", "rewrite_imports", "unclassified", "unpack"]


@dataclasses.dataclass(frozen=True)
class Suite:
    """One upstream project whose tests run against afterward."""

    project: str
    """The distribution name on PyPI, and the package folder left out of the unpacked copy."""
    rewrites: Mapping[tuple[str, str], str]
    """(module, name) imported by the upstream tests -> the afterward module to import it from."""
    selected: Sequence[str]
    """Test files and folders (relative to the sdist) that run; folders are searched for files."""
    sources: Sequence[str]
    """Folders whose files are rewritten too, without being collected (FastAPI's `docs_src`)."""
    excluded: Mapping[str, str]
    """Files that mention background tasks but do not run here -> why."""


# Files that mention background tasks (checked in every sdist, so a new upstream test is seen).
MENTIONS = re.compile(r"background", re.IGNORECASE)


# --- rewriting the imports ---------------------------------------------------------------------


class RewriteError(ValueError):
    """An upstream file spells a background-task import in a way the rewrite cannot change."""


def rewrite_imports(source: str, rewrites: Mapping[tuple[str, str], str], *, path: str) -> str:
    """Return `source` with each import of a name in `rewrites` taken from afterward instead.

    `from fastapi import BackgroundTasks, Depends` becomes `from fastapi import Depends` plus
    `from afterward.fastapi import BackgroundTasks`, at the same indentation, with blank lines
    added so the lines below keep their numbers. Aliases (`as`) are kept. Anything else that
    reaches one of these names (`fastapi.BackgroundTasks`, `import starlette.background`) raises
    `RewriteError`: it would silently keep the upstream class.
    """
    tree = ast.parse(source, filename=path)
    lines = source.splitlines(keepends=True)
    replacements: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            moved = [a for a in node.names if (node.module, a.name) in rewrites]
            if moved:
                replacements.append(_replace_import(node, moved, rewrites, lines, path))
        else:
            _refuse_other_spellings(node, rewrites, path)
    for start, end, text in sorted(replacements, reverse=True):
        lines[start:end] = [text]
    return "".join(lines)


def _replace_import(
    node: ast.ImportFrom,
    moved: list[ast.alias],
    rewrites: Mapping[tuple[str, str], str],
    lines: list[str],
    path: str,
) -> tuple[int, int, str]:
    # ast.parse always sets the end positions; the checks narrow the Optional types.
    assert node.end_lineno is not None
    assert node.end_col_offset is not None
    first, last = lines[node.lineno - 1], lines[node.end_lineno - 1]
    indent = first[: node.col_offset]
    rest = last[node.end_col_offset :].strip()
    if indent.strip() or (rest and not rest.startswith("#")):
        raise RewriteError(
            f"{path}:{node.lineno}: the import shares its line with other code; the rewrite "
            f"needs it on lines of its own. Add this spelling to scripts/compat.py."
        )
    kept = [a for a in node.names if a not in moved]
    statements = [ast.ImportFrom(module=node.module, names=kept, level=0)] if kept else []
    statements += [
        ast.ImportFrom(module=rewrites[(node.module or "", a.name)], names=[a], level=0)
        for a in moved
    ]
    new = [indent + ast.unparse(statement) for statement in statements]
    old_count = node.end_lineno - node.lineno + 1
    new += [""] * (old_count - len(new))
    return node.lineno - 1, node.end_lineno, "".join(line + "\n" for line in new)


def _refuse_other_spellings(
    node: ast.AST, rewrites: Mapping[tuple[str, str], str], path: str
) -> None:
    if not isinstance(node, ast.Attribute):
        return
    owner = ast.unparse(node.value)
    if (owner, node.attr) in rewrites:
        raise RewriteError(
            f"{path}:{node.lineno}: '{owner}.{node.attr}' reaches an upstream background-task "
            f"class without a `from ... import`; the rewrite cannot change it. Add this "
            f"spelling to scripts/compat.py."
        )


# --- unpacking and selecting ---------------------------------------------------------------------


def unpack(sdist: Path, suite: Suite, into: Path) -> Path:
    """Extract the tests, the rewritten sources and the pytest configuration of `sdist`.

    The package itself (`starlette/`, `fastapi/`) stays out, so the tests import the installed
    copy, the one afterward is built on.
    """
    top = {"tests", "pyproject.toml", *(Path(source).parts[0] for source in suite.sources)}
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if _inside(m.name, top)]
        if hasattr(tarfile, "data_filter"):
            archive.extractall(into, members, filter="data")
        else:  # Python < 3.11.4, which has no extraction filters
            archive.extractall(into, members)  # the sdist comes from PyPI
    (root,) = into.iterdir()
    return root


def _inside(name: str, top: set[str]) -> bool:
    parts = Path(name).parts
    return len(parts) > 1 and parts[1] in top


def python_files(root: Path, entries: Iterable[str]) -> list[Path]:
    """Return the `.py` files at or under `entries` (relative to `root`), sorted."""
    found: set[Path] = set()
    for entry in entries:
        path = root / entry
        found.update(path.rglob("*.py") if path.is_dir() else [path])
    return sorted(found)


def unclassified(root: Path, suite: Suite) -> list[str]:
    """Return the files that mention background tasks but are neither selected nor excluded."""
    covered = {p.relative_to(root).as_posix() for p in python_files(root, suite.selected)}
    missing = []
    for path in python_files(root, ["tests", *suite.sources]):
        name = path.relative_to(root).as_posix()
        if (
            name in covered
            or name in suite.excluded
            or any(name.startswith(f"{source}/") for source in suite.sources)
        ):
            continue
        if MENTIONS.search(path.read_text(encoding="utf-8")):
            missing.append(name)
    return missing


def prepare(root: Path, suite: Suite) -> int:
    """Rewrite the imports in the selected files and the sources; return how many changed."""
    changed = 0
    for path in python_files(root, [*suite.selected, *suite.sources]):
        name = path.relative_to(root).as_posix()
        before = path.read_text(encoding="utf-8")
        after = rewrite_imports(before, suite.rewrites, path=name)
        if after != before:
            path.write_text(after, encoding="utf-8")
            changed += 1
    return changed
