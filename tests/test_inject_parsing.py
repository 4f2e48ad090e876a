"""`inject` parses path and query values as FastAPI (pydantic) does: same status, same 422 items.

Each input is sent to the same function served by FastAPI and by Starlette with `inject`, and the
two answers are compared whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Route

from afterward import inject

pytestmark = pytest.mark.anyio


async def takes_int(item: int, page: int) -> dict[str, Any]:
    return {"item": item, "page": page}


async def takes_float(item: float, ratio: float | None = None) -> dict[str, Any]:
    return {"item": repr(item), "ratio": repr(ratio)}  # inf and nan are not JSON


async def takes_bool(item: bool, flag: bool = False) -> dict[str, Any]:
    return {"item": item, "flag": flag}


async def takes_query_first(page: int, item: int) -> dict[str, Any]:
    return {"item": item, "page": page}


async def takes_str(item: str, q: str) -> dict[str, Any]:
    return {"item": item, "q": q}


def apps(endpoint: Callable[..., Any]) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    fastapi = FastAPI()
    fastapi.get("/items/{item}")(endpoint)
    starlette = Starlette(routes=[Route("/items/{item}", inject(endpoint))])
    return tuple(  # type: ignore[return-value]
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        for app in (fastapi, starlette)
    )


NUMBERS = [
    "2", "2.0", "2.00", "-2.0", "+2.0", "2.5", "2.", ".0", "1_000", "1_000.0", "1__0", "_1", "1_",
    " 2 ", "\t3\n", "\u00a03", "\u20033", "\x1c3", "\u200b3", "+2", "-0", "00012", "0x10", "1e3",
    "1E5", "1e+5", "1e1_0", "inf", "-inf", "Infinity", "nan", "NaN", "\u0663",
    "\u06f3.0", "\uff12", "\u00bd", "",
    "  ", "1 000", "--2", "2.0_", "1.0_0", "9" * 4300, "9" * 4301, "-" + "9" * 4301,
    "0" * 4300 + "1", "9" * 4300 + ".0", "9" * 5000, "abc", "true",
]  # fmt: skip
BOOLS = [
    "true", "True", "TRUE", "tRuE", "1", "0", "yes", "YES", "y", "on", "On", "off", "no", "n",
    "f", "t", "false", " true", "true ", "2", "1.0", "0.0", "", "\u0661", "nope",
]  # fmt: skip


async def assert_same_answers(endpoint: Callable[..., Any], urls: list[str]) -> None:
    fastapi, starlette = apps(endpoint)
    async with fastapi, starlette:
        for url in urls:
            expected = await fastapi.get(url)
            got = await starlette.get(url)
            assert (got.status_code, got.json()) == (expected.status_code, expected.json()), url


def urls(path: str, name: str, values: list[str]) -> list[str]:
    return [f"{path}?{httpx.QueryParams({name: value})}" for value in values]


async def test_int_values_are_parsed_as_fastapi_parses_them() -> None:
    await assert_same_answers(takes_int, urls("/items/1", "page", NUMBERS))


async def test_float_values_are_parsed_as_fastapi_parses_them() -> None:
    await assert_same_answers(takes_float, urls("/items/1.5", "ratio", NUMBERS))


async def test_bool_values_are_parsed_as_fastapi_parses_them() -> None:
    await assert_same_answers(takes_bool, urls("/items/true", "flag", BOOLS))


async def test_path_values_are_parsed_as_fastapi_parses_them() -> None:
    for endpoint in (takes_int, takes_float, takes_bool):
        await assert_same_answers(endpoint, ["/items/2.0?page=1", "/items/x?page=1", "/items/٣"])


async def test_error_items_list_path_parameters_before_query_parameters() -> None:
    await assert_same_answers(
        takes_int, ["/items/x?page=y", "/items/x", "/items/1", "/items/x?page=1"]
    )
    await assert_same_answers(takes_query_first, ["/items/x?page=y", "/items/x"])
    await assert_same_answers(takes_str, ["/items/x", "/items/x?q="])
