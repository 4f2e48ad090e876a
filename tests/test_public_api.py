"""The public surface: `afterward.__all__` is sorted and complete, and each name is documented."""

from __future__ import annotations

import ast
import importlib
import inspect
import types
from pathlib import Path

import pytest

import afterward


def isort_order(name: str) -> tuple[int, str]:
    """Constants first, then classes (CamelCase), then everything else, each group sorted.

    The order ruff's RUF022 calls "isort-style", which `__init__.py` follows.
    """
    if name.isupper():
        return 0, name
    if name[:1].isupper():
        return 1, name
    return 2, name


def documented_names(module: types.ModuleType) -> dict[str, str]:
    """Map each module-level name assigned in `module` to the string literal that follows it.

    A constant or a type alias cannot carry a `__doc__` of its own; its documentation is the
    attribute docstring written under it, which Sphinx, mkdocstrings and IDEs read.
    """
    tree = ast.parse(Path(inspect.getfile(module)).read_text(encoding="utf-8"))
    docs: dict[str, str] = {}
    for node, following in zip(tree.body, tree.body[1:], strict=False):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, ast.AnnAssign):
            target = node.target
        else:
            continue
        if (
            isinstance(target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[target.id] = following.value.value
    return docs


def defining_module(name: str) -> types.ModuleType:
    """Return the module `afterward/__init__.py` imports `name` from (itself if it defines it)."""
    tree = ast.parse(Path(inspect.getfile(afterward)).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return importlib.import_module(f"afterward.{node.module}")
    return afterward


def own_docstring(obj: object, name: str) -> str | None:
    if isinstance(obj, type):
        doc = vars(obj).get("__doc__")  # a class does not inherit its base's docstring
        return doc if isinstance(doc, str) else None
    if isinstance(obj, types.ModuleType) or inspect.isroutine(obj):
        return obj.__doc__
    return documented_names(defining_module(name)).get(name)


def test_all_is_sorted() -> None:
    assert afterward.__all__ == sorted(afterward.__all__, key=isort_order)


def test_all_has_no_duplicates() -> None:
    assert len(set(afterward.__all__)) == len(afterward.__all__)


@pytest.mark.parametrize("name", afterward.__all__)
def test_every_exported_name_exists(name: str) -> None:
    assert hasattr(afterward, name), f"afterward.__all__ lists {name!r}, which does not exist"


@pytest.mark.parametrize("name", afterward.__all__)
def test_every_exported_name_has_a_docstring(name: str) -> None:
    doc = own_docstring(getattr(afterward, name), name)
    assert doc is not None, f"afterward.{name} has no docstring"
    assert doc.strip(), f"afterward.{name} has an empty docstring"


def test_every_public_name_of_the_package_is_exported() -> None:
    public = {
        name
        for name, value in vars(afterward).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)  # subpackages appear once imported
        and name != "annotations"  # `from __future__ import annotations`
    }
    assert public == set(afterward.__all__)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from afterward import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(afterward.__all__)


def test_version_is_a_string() -> None:
    assert isinstance(afterward.__version__, str)
    assert afterward.__version__.count(".") >= 1
