"""afterward's pytest plugin: fixtures only, inert unless a test asks for one.

Registered through the `pytest11` entry point when afterward is installed. It adds no hook, no
option and no marker, and imports afterward only when one of its fixtures is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from afterward.testing import IdleWaiter, RecordingBackend

__all__ = ["afterward_recorder", "afterward_wait_idle"]


@pytest.fixture
def afterward_recorder() -> Iterator[RecordingBackend]:
    """Record every collector's tasks instead of running them, for the whole test.

    The same as `with afterward.testing.record_tasks() as recorded:` around the test.
    """
    from afterward.testing import record_tasks

    with record_tasks() as recorded:
        yield recorded


@pytest.fixture
def afterward_wait_idle() -> IdleWaiter:
    """Wait until `BackgroundTasksMiddleware` has run the tasks handed to it.

    `await afterward_wait_idle(app)` in an async test (on the app's event loop);
    `afterward_wait_idle.sync(client)` with Starlette's `TestClient`, inside its `with` block.
    """
    from afterward.testing import IdleWaiter

    return IdleWaiter()
