"""What the runner needs of a collector: the `Collector` protocol.

A module of its own, at the bottom, so that the runner's helpers (`_failures`) can name it
without importing the runner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from anyio import CapacityLimiter

__all__ = ["Collector"]


class Collector(Protocol):
    """What the runner needs of a collector (`afterward.BackgroundTasks` has it).

    The runner's loop reads `tasks` and `_next` itself, as `take_next` would (one call less per
    task); `take_next` must do no more than that.
    """

    tasks: list[Any]
    """The entries, in the order they were added."""
    _next: int
    """The index of the first entry not started yet."""

    @property
    def stop_on_error(self) -> bool: ...
    @property
    def limiter(self) -> CapacityLimiter | None: ...
    @property
    def on_error(self) -> Any: ...
    @property
    def concurrency(self) -> int: ...

    def next_pending(self) -> object | None:
        """Return the first entry not started yet, without starting it; None if there is none."""

    def take_next(self) -> object | None:
        """Mark the first entry not started yet as started and return it; None if there is none."""

    def skip_pending(self) -> Sequence[object]:
        """Mark every entry not started yet as done and return them."""

    def started_before(self, skipped: int) -> object | None:
        """Return the entry started last, before the `skipped` ones `skip_pending` returned."""
