"""`lifespan(app)`: run an ASGI app's lifespan around a block, as a server does.

HTTPX's `ASGITransport` sends requests only; an app under `BackgroundTasksMiddleware` needs its
lifespan for the supervisor that runs tasks detached.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream

if sys.version_info < (3, 11):  # pragma: no cover - the backport AnyIO depends on
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["lifespan"]

_Message = dict[str, Any]


@asynccontextmanager
async def lifespan(
    app: Callable[..., Awaitable[None]], *, timeout: float | None = 10.0
) -> AsyncIterator[None]:
    """Send the app `lifespan.startup` before the block and `lifespan.shutdown` after it.

    Args:
        app: The ASGI app (a Starlette or FastAPI app, or the middleware wrapping one).
        timeout: Seconds to wait for each of startup and shutdown; None waits for ever.

    Raises:
        RuntimeError: the app answered `lifespan.startup.failed` or `lifespan.shutdown.failed`,
            or returned without answering.
        TimeoutError: it did not answer within `timeout` seconds.
    """
    to_app, app_receives = anyio.create_memory_object_stream[_Message](2)
    app_sends, from_app = anyio.create_memory_object_stream[_Message](2)
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}

    raised: list[Exception] = []

    # Shielded, as a server's lifespan task is not cancelled with the requests: a block cancelled
    # from outside still gets the app's shutdown. Cancelled by us only if the app fails.
    app_scope = anyio.CancelScope(shield=True)

    async def serve() -> None:
        with app_scope:
            async with app_sends:
                try:
                    await app(scope, app_receives.receive, app_sends.send)
                except Exception as exc:
                    # Reported by `_answer`, as the cause of the answer that never came: raising
                    # it here would cancel the block with an exception group instead.
                    raised.append(exc)

    error: BaseException | None = None
    try:
        async with to_app, app_receives, from_app, anyio.create_task_group() as group:
            group.start_soon(serve)
            try:
                await to_app.send({"type": "lifespan.startup"})
                await _answer(from_app, "startup", timeout, raised)
                try:
                    yield
                finally:
                    # Shielded: a block cancelled from outside still shuts the app down.
                    with anyio.CancelScope(shield=True):
                        await to_app.send({"type": "lifespan.shutdown"})
                        await _answer(from_app, "shutdown", timeout, raised)
            except BaseException:
                app_scope.cancel()  # an app that failed may still wait for messages
                raise
    except BaseExceptionGroup as group_error:
        # The task group wraps what the block raised (an AssertionError of the test): the test
        # sees it as it was raised. `serve` raises nothing, so it is the only one.
        if len(group_error.exceptions) != 1:  # pragma: no cover - `serve` raises nothing
            raise
        error = group_error.exceptions[0]
    if error is not None:
        raise error  # out here, so that its cause and context stay its own


async def _answer(
    from_app: ObjectReceiveStream[_Message],
    phase: str,
    timeout: float | None,
    raised: list[Exception],
) -> None:
    try:
        with anyio.fail_after(timeout):
            message = await from_app.receive()
    except anyio.EndOfStream:
        cause = raised[0] if raised else None
        raise RuntimeError(
            f"The app returned without answering lifespan.{phase}"
            + (f": it raised {cause!r}." if cause else ".")
        ) from cause
    if message["type"] == f"lifespan.{phase}.failed":
        raise RuntimeError(f"The app's lifespan {phase} failed: {message.get('message', '')}")
    if message["type"] != f"lifespan.{phase}.complete":
        raise RuntimeError(f"Expected lifespan.{phase}.complete, got {message['type']!r}.")
