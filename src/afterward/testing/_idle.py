"""`wait_idle()`: wait until the middleware's supervisor has run every task handed to it.

Under `BackgroundTasksMiddleware` a request's ASGI call returns before its tasks have run (they
run detached, in the supervisor started by the app's lifespan), so a test that checks what the
tasks did waits for the supervisor first, instead of sleeping.
"""

from __future__ import annotations

import threading

import anyio

from .._middleware import BackgroundTasksMiddleware
from .._supervisor import Supervisor
from ._sync import portal_of

__all__ = ["IdleWaiter", "find_middlewares", "wait_idle", "wait_idle_sync"]

_START_LIFESPAN = (
    "Start the app's lifespan first: `with TestClient(app) as client:` (not a bare "
    "`TestClient(app)`), or `async with afterward.testing.lifespan(app):` around an HTTPX "
    "client."
)


def find_middlewares(app: object) -> list[BackgroundTasksMiddleware]:
    """Return the `BackgroundTasksMiddleware`s in `app`, outermost first.

    `app` may be the middleware itself, an app it wraps directly or through other middleware
    (anything with an `.app`), or a Starlette or FastAPI app with the middleware in its
    `middleware=[...]` (found in the middleware stack Starlette builds on its first call).

    Raises:
        RuntimeError: none is found; the message says whether the app has not been started yet.
    """
    found: list[BackgroundTasksMiddleware] = []
    unbuilt = False
    seen: set[int] = set()
    node: object = app
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, BackgroundTasksMiddleware):
            found.append(node)
        if hasattr(node, "middleware_stack"):  # Starlette, FastAPI
            unbuilt = unbuilt or node.middleware_stack is None
            node = node.middleware_stack
        else:
            node = getattr(node, "app", None)
    if found:
        return found
    if unbuilt:
        raise RuntimeError(
            f"{app!r} has not been started, so its middleware (where a "
            f"BackgroundTasksMiddleware would be) does not exist yet. {_START_LIFESPAN}"
        )
    raise RuntimeError(
        f"No BackgroundTasksMiddleware was found in {app!r}, so there is no supervisor to wait "
        f"for (without the middleware, tasks run inline: they have run when the response "
        f"returns). If the middleware is there but out of sight (inside a Mount, or behind a "
        f"wrapper without an `.app` attribute), pass the middleware instance itself."
    )


async def wait_idle(app: object, *, timeout: float | None = 10.0) -> None:
    """Wait until no task handed to the app's `BackgroundTasksMiddleware` waits or runs.

    Call it on the app's event loop, after the requests whose tasks you wait for have returned
    (their tasks have been handed off by then). Tasks queued by running tasks are waited for too.

    Args:
        app: The app (see `find_middlewares`), or the middleware instance.
        timeout: Seconds to wait before `TimeoutError`; None waits for ever.

    Raises:
        RuntimeError: no middleware is found, the lifespan has not been started (its
            supervisor does not exist), or this is not the app's event loop thread.
        TimeoutError: still busy after `timeout` seconds; the message says how busy.
    """
    supervisors = [_supervisor_of(middleware) for middleware in find_middlewares(app)]
    # A supervisor that has shut down with nothing left is idle for good, seen from any thread.
    supervisors = [s for s in supervisors if s.running or s.counts() != (0, 0)]
    for supervisor in supervisors:
        if supervisor._loop_thread != threading.get_ident():
            raise RuntimeError(
                "wait_idle() must run on the app's event loop, and this thread is not the "
                "one serving the app. With Starlette's TestClient (which serves the app in a "
                "thread of its own), call afterward.testing.wait_idle_sync(client) instead."
            )
    try:
        with anyio.fail_after(timeout):
            for supervisor in supervisors:
                await supervisor.wait_idle()
    except TimeoutError:
        busy = [supervisor.counts() for supervisor in supervisors]
        waiting = sum(counts[0] for counts in busy)
        active = sum(counts[1] for counts in busy)
        raise TimeoutError(
            f"The background tasks were still busy after {timeout:g} s: {waiting} request(s)' "
            f"tasks waiting to start and {active} running. A task may be stuck, or wait for "
            f"something the test has not done yet."
        ) from None


def wait_idle_sync(client: object, app: object = None, *, timeout: float | None = 10.0) -> None:
    """Wait, from a synchronous test, until the middleware's supervisor is idle (see `wait_idle`).

    Args:
        client: A Starlette (or FastAPI) `TestClient`, inside its `with` block, or an AnyIO
            `BlockingPortal` to the app's event loop.
        app: The app or the middleware; by default the client's `app`.
        timeout: Seconds to wait before `TimeoutError`; None waits for ever.

    Raises:
        RuntimeError: the client is outside its `with` block, or see `wait_idle`.
        TimeoutError: see `wait_idle`.
    """
    portal = portal_of(client, "wait_idle_sync()")
    target = app if app is not None else getattr(client, "app", None)
    if target is None:
        raise TypeError("wait_idle_sync() needs the app when given a portal: pass app=.")

    async def wait() -> None:
        await wait_idle(target, timeout=timeout)

    portal.call(wait)


def _supervisor_of(middleware: BackgroundTasksMiddleware) -> Supervisor:
    supervisor = middleware.supervisor
    if supervisor is None:
        raise RuntimeError(
            "The BackgroundTasksMiddleware has no supervisor because the app's lifespan has "
            "not been started: its tasks run inline, after each response, and have run when "
            f"the request returns. To test them detached, as a server runs them: {_START_LIFESPAN}"
        )
    return supervisor


class IdleWaiter:
    """`wait_idle` and `wait_idle_sync` in one object: what the `afterward_wait_idle` fixture gives.

    Args:
        timeout: Seconds each wait may take before `TimeoutError`; None waits for ever.
    """

    def __init__(self, *, timeout: float | None = 10.0) -> None:
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<IdleWaiter timeout={self.timeout!r}>"

    async def __call__(self, app: object) -> None:
        """Wait until the app's middleware is idle, on its event loop (see `wait_idle`)."""
        await wait_idle(app, timeout=self.timeout)

    def sync(self, client: object, app: object = None) -> None:
        """Wait until the app's middleware is idle, through a TestClient (see `wait_idle_sync`)."""
        wait_idle_sync(client, app, timeout=self.timeout)
