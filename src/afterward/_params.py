"""`Depends`, and how `inject` reads path and query values into typed parameters."""

from __future__ import annotations

import re
import types
from collections.abc import Callable
from typing import Any, Union, get_args, get_origin

__all__ = ["Dependency", "Depends", "ValueParam", "converter_for"]


class Dependency:
    """The marker `Depends(...)` returns; `inject` resolves it to the dependency's result."""

    __slots__ = ("dependency", "use_cache")

    def __init__(self, dependency: Callable[..., Any] | None, use_cache: bool) -> None:
        self.dependency = dependency
        self.use_cache = use_cache

    def __repr__(self) -> str:
        name = getattr(self.dependency, "__qualname__", repr(self.dependency))
        cache = "" if self.use_cache else ", use_cache=False"
        return f"Depends({name}{cache})"


def Depends(dependency: Callable[..., Any] | None = None, *, use_cache: bool = True) -> Any:
    """Declare a parameter whose value is the result of calling `dependency`.

    Use it as a default value (`q: str = Depends(get_query)`) or in `Annotated`
    (`q: Annotated[str, Depends(get_query)]`). The dependency's own parameters are resolved the
    same way as the endpoint's. Sync dependencies run in a worker thread, async ones are awaited;
    a generator dependency's code after `yield` runs after the background tasks. Within one
    request the result is computed once and shared, unless `use_cache=False`.

    Args:
        dependency: The callable to call. If omitted, the parameter's annotation is called
            (`db: Annotated[Database, Depends()]`).
        use_cache: Share one result per request among all who ask for it.

    Returns:
        A marker that `inject` resolves; typed `Any` so it fits any parameter's annotation.
    """
    if dependency is not None and not callable(dependency):
        raise TypeError(
            f"Depends() takes a callable (a function or a class), got {dependency!r}. "
            f"Write Depends(get_value), not Depends(get_value())."
        )
    return Dependency(dependency, use_cache)


class ValueParam:
    """A parameter read from the path, else from the query string."""

    __slots__ = ("convert", "default", "error_type", "is_str", "message", "name", "required")

    def __init__(self, name: str, annotation: Any, default: Any, required: bool) -> None:
        convert, error_type, message = converter_for(annotation)
        self.name = name
        self.convert = convert
        self.is_str = convert is _to_str  # a str value then needs no conversion at all
        self.error_type = error_type
        self.message = message
        self.default = default
        self.required = required

    def error(self, location: str, raw: object, exc: Exception) -> dict[str, Any]:
        """Return FastAPI's 422 error item for `raw`, which `convert` refused with `exc`."""
        if isinstance(exc, _TooLongError):
            error_type, message = "int_parsing_size", _TooLongError.message
        else:
            error_type, message = self.error_type, self.message
        return {"type": error_type, "loc": [location, self.name], "msg": message, "input": raw}


_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})

# The characters pydantic strips around a number: Unicode White_Space (Rust's `trim`), which is not
# Python's `str.strip()` set (that one also strips the separators U+001C..U+001F).
_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# ASCII digits with single underscores between them, and an optional fraction of zeros ("2.0"):
# pydantic's lax str -> int. Python's `int()` also takes non-ASCII digits ("٣"), pydantic does not.
_INTEGER = re.compile(r"[+-]?0*(\d+(?:_\d+)*)(?:\.0+)?", re.ASCII)
# pydantic refuses integers longer than this many digits (leading zeros aside): int_parsing_size.
_MAX_INT_DIGITS = 4300


class _TooLongError(ValueError):
    """An integer of more digits than pydantic parses."""

    message = "Unable to parse input string as an integer, exceeded maximum size"


def _to_str(raw: Any) -> str:
    return raw if isinstance(raw, str) else str(raw)


def _to_int(raw: Any) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw  # a Starlette `{id:int}` path convertor already did it
    text = str(raw)
    if text.isdigit() and text.isascii() and len(text) <= _MAX_INT_DIGITS:
        return int(text)  # the usual case, without the pattern
    match = _INTEGER.fullmatch(text.strip(_WHITESPACE))
    if match is None:
        raise ValueError(raw)
    digits = match[1].replace("_", "")
    if len(digits) > _MAX_INT_DIGITS:
        raise _TooLongError(raw)
    value = int(digits)
    return -value if text.lstrip(_WHITESPACE).startswith("-") else value


def _to_float(raw: Any) -> float:
    if isinstance(raw, float):
        return raw
    text = str(raw).strip(_WHITESPACE)
    if not text.isascii():
        raise ValueError(raw)  # float() reads non-ASCII digits ("٣"); pydantic does not
    return float(text)


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(raw)


def _identity(raw: Any) -> Any:
    return raw


# Error types and messages are the ones FastAPI (pydantic) answers with, so clients that already
# parse FastAPI's 422 bodies parse ours.
_CONVERTERS: dict[Any, tuple[Callable[[Any], Any], str, str]] = {
    str: (_to_str, "string_type", "Input should be a valid string"),
    int: (
        _to_int,
        "int_parsing",
        "Input should be a valid integer, unable to parse string as an integer",
    ),
    float: (
        _to_float,
        "float_parsing",
        "Input should be a valid number, unable to parse string as a number",
    ),
    bool: (_to_bool, "bool_parsing", "Input should be a valid boolean, unable to interpret input"),
    Any: (_identity, "string_type", "Input should be a valid string"),
}


def converter_for(annotation: Any) -> tuple[Callable[[Any], Any], str, str]:
    """Return `(convert, error_type, message)` for a path/query parameter's annotation.

    Raises:
        TypeError: the annotation is not one `inject` can read from a path or query string.
    """
    if annotation in _CONVERTERS:
        return _CONVERTERS[annotation]
    if get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1 and len(get_args(annotation)) == 2 and members[0] in _CONVERTERS:
            return _CONVERTERS[members[0]]  # Optional[X]: None only ever comes from the default
    raise TypeError(f"annotation {annotation!r} is not supported")
