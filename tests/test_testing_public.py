"""afterward.testing's public surface: sorted, complete, documented, and in the API reference."""

from __future__ import annotations

import inspect
import types

import pytest

import afterward.testing
from test_docs_site import reference_members
from test_public_api import isort_order

testing: types.ModuleType = afterward.testing


def test_all_is_sorted_and_complete() -> None:
    assert testing.__all__ == sorted(testing.__all__, key=isort_order)
    public = {
        name
        for name, value in vars(testing).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert public == set(testing.__all__)


@pytest.mark.parametrize("name", afterward.testing.__all__)
def test_every_name_has_a_docstring(name: str) -> None:
    doc = inspect.getdoc(getattr(testing, name))
    assert doc, f"afterward.testing.{name} has no docstring"


def test_the_api_reference_renders_every_name() -> None:
    assert sorted(reference_members("afterward.testing")) == sorted(testing.__all__)
