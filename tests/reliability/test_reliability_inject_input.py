"""§5 Any path and query values into `inject`, compared with FastAPI's answers (Hypothesis).

The same endpoint is served by FastAPI (with the drop-in `BackgroundTasks`) and by Starlette with
`inject`. Hypothesis sends both the same request: any string in the path (percent-encoded), query
values of any text, huge, missing, repeated, of the wrong type, and unknown parameters. The two
answers must be the same: the status, and the body of a 200 or a 422 (the same 422 items); and
never a 500 (a server error would raise out of the ASGI call here). A request that passes
validation queues a task, which runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import anyio.from_thread
import pytest
from fastapi import FastAPI
from hypothesis import example, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Route

from afterward import BackgroundTasks, inject
from afterward.fastapi import BackgroundTasks as DropIn

EXAMPLES = 250
RAN: list[str] = []


def ran(item: str) -> None:
    RAN.append(item)


def answer(**values: Any) -> dict[str, Any]:
    return {name: repr(value) for name, value in values.items()}  # inf and nan are not JSON


async def with_inject(
    tasks: BackgroundTasks,
    item_id: int,
    name: str,
    q: str | None = None,
    limit: int = 10,
    ratio: float = 0.5,
    flag: bool = False,
    maybe: int | None = None,
) -> dict[str, Any]:
    tasks.add_task(ran, name)
    return answer(item_id=item_id, name=name, q=q, limit=limit, ratio=ratio, flag=flag, maybe=maybe)


async def with_fastapi(
    tasks: DropIn,
    item_id: int,
    name: str,
    q: str | None = None,
    limit: int = 10,
    ratio: float = 0.5,
    flag: bool = False,
    maybe: int | None = None,
) -> dict[str, Any]:
    tasks.add_task(ran, name)
    return answer(item_id=item_id, name=name, q=q, limit=limit, ratio=ratio, flag=flag, maybe=maybe)


def fastapi_app() -> FastAPI:
    app = FastAPI()
    app.get("/items/{item_id}")(with_fastapi)
    return app


def inject_app() -> Starlette:
    return Starlette(routes=[Route("/items/{item_id}", inject(with_inject))])


NUMBERS = ["0", "-1", "+5", " 7 ", "1_000", "0x10", "1e3", "1.0", "1.5", "٣", "inf", "nan", "-0"]
WORDS = ["true", "False", "yes", "on", "0", "1", "maybe", "", " ", "none", "null"]
# Huge values are drawn by name and expanded in the test, so Hypothesis never prints 100 kB.
HUGE = {
    "<4301 digits>": "9" * 4301,  # one more than int() takes from a string
    "<100k digits>": "1" * 100_000,
    "<100k letters>": "x" * 100_000,
    "<long decimal>": "1" + "0" * 400 + ".5",
    "<1e400>": "1e400",
}
text_values = st.one_of(
    st.text(max_size=20), st.sampled_from(NUMBERS + WORDS + list(HUGE)), st.integers().map(str)
)
pairs = st.lists(
    st.tuples(
        st.sampled_from(["name", "q", "limit", "ratio", "flag", "maybe", "other"]), text_values
    ),
    max_size=6,
)
# Half the requests carry the required `name`, so more of them get past validation.
query = st.one_of(pairs, pairs.map(lambda rest: [("name", "n"), *rest]))
path_values = st.one_of(text_values, st.integers().map(str))


async def call(app: Any, item_id: str, params: list[tuple[str, str]]) -> tuple[int, bytes]:
    """Send one GET straight to the ASGI app (no client: no URL length limit); return the answer."""
    path = "/items/" + item_id
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": quote(path).encode(),
        "query_string": urlencode(params).encode(), "root_path": "", "headers": [(b"host", b"t")],
        "client": ("127.0.0.1", 1), "server": ("t", 80),
    }  # fmt: skip
    status = 0
    body = b""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")

    await app(scope, receive, send)  # a server error raises here
    return status, body


@pytest.fixture(scope="module")
def portal() -> Iterator[anyio.from_thread.BlockingPortal]:
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        yield portal


def test_inject_answers_any_path_and_query_as_fastapi_does(
    portal: anyio.from_thread.BlockingPortal,
) -> None:
    ours, theirs = inject_app(), fastapi_app()
    statuses: dict[int, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(item_id=path_values, params=query)
    @example(item_id="1", params=[("name", "a"), ("limit", "1"), ("limit", "x")])  # repeated
    @example(item_id="1", params=[])  # missing
    @example(item_id="<4301 digits>", params=[("name", "n")])  # too many digits for int()
    def check(item_id: str, params: list[tuple[str, str]]) -> None:
        item_id = HUGE.get(item_id, item_id)
        params = [(key, HUGE.get(value, value)) for key, value in params]
        RAN.clear()
        mine = portal.call(call, ours, item_id, params)
        ran_here = list(RAN)
        RAN.clear()
        reference = portal.call(call, theirs, item_id, params)
        assert mine[0] != 500
        assert mine[0] == reference[0], (mine[1][:500], reference[1][:500])
        if mine[0] in (200, 422):  # a 404 (no route) is Starlette's own page, not inject's
            assert json.loads(mine[1]) == json.loads(reference[1])
        assert ran_here == RAN  # a task queued and run exactly when FastAPI's ran
        statuses[mine[0]] = statuses.get(mine[0], 0) + 1

    check()
    print("FIGURE", {"test": "inject-vs-fastapi", "statuses": statuses})
    assert set(statuses) >= {200, 422}
