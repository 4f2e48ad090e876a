"""Fixtures of the reliability tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from reliability_server import Server, served


@pytest.fixture(scope="module")
def shared() -> Iterator[Callable[[str], Server]]:
    """`shared(mode)`: one server per mode for the whole module, its records reset per call.

    Starting a server costs a second or more; tests that leave it in a clean state share one.
    """
    with contextlib.ExitStack() as stack:
        servers: dict[str, Server] = {}

        def get(mode: str) -> Server:
            if mode not in servers:
                servers[mode] = stack.enter_context(served(mode))
            server = servers[mode]
            server.get("/reset")
            server.mark = len(server.output.lines)
            return server

        yield get
