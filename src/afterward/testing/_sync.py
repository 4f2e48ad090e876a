"""Running the testing helpers' coroutines from synchronous tests: a new loop, or the app's portal.

Starlette's `TestClient` runs the app on an event loop in a thread of its own, reachable through
its `portal` (an AnyIO `BlockingPortal`) while the client is inside its `with` block.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Literal

import anyio
from anyio.from_thread import BlockingPortal

__all__ = ["AsyncBackend", "PortalSource", "portal_of", "run_sync"]

AsyncBackend = Literal["asyncio", "trio"]

PortalSource = object
"""A Starlette `TestClient` (inside its `with` block), an AnyIO `BlockingPortal`, or None."""


def portal_of(source: object, what: str) -> BlockingPortal:
    """Return the portal to the app's event loop that `source` (a TestClient or portal) gives.

    Raises:
        RuntimeError: a TestClient outside its `with` block (it has no running loop then).
        TypeError: `source` is neither.
    """
    if isinstance(source, BlockingPortal):
        return source
    if hasattr(source, "portal") and hasattr(source, "app"):
        portal = source.portal
        if isinstance(portal, BlockingPortal):
            return portal
        raise RuntimeError(
            f"{what} needs the TestClient inside its `with` block: outside it the client runs "
            f"no lifespan and keeps no event loop between requests. Write `with TestClient(app) "
            f"as client:` and call it inside the block."
        )
    raise TypeError(
        f"{what} takes a Starlette TestClient (inside its `with` block) or an AnyIO "
        f"BlockingPortal, got {source!r}."
    )


def run_sync(
    func: Callable[[], Awaitable[None]],
    portal: PortalSource,
    backend: AsyncBackend,
    *,
    what: str,
) -> None:
    """Run `func()` to its end: through `portal` if given, else in a new event loop of `backend`.

    Raises:
        RuntimeError: called inside a running event loop without a portal.
    """
    if portal is not None:
        portal_of(portal, what).call(func)
        return
    if _in_event_loop():
        raise RuntimeError(
            f"{what} was called inside a running event loop, which it cannot block. In an async "
            f"test, await the async form instead."
        )
    anyio.run(func, backend=backend)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return True
    trio = sys.modules.get("trio")
    if trio is None:  # pragma: no cover - the test suite has trio imported
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True
