"""`afterward.on_event`, `add_attempt_scope` and the outcome counters, on their own."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pytest

import afterward
from afterward import BackgroundTasks, TaskEvent
from afterward._events import count, counts, emit, hooked, listeners, scopes


def job() -> None: ...


@pytest.fixture(autouse=True)
def _no_leftover_hooks() -> Iterator[None]:
    yield
    assert not listeners, "a test left a callback registered"
    assert not scopes, "a test left a scope registered"


def test_a_callback_gets_the_queued_event_at_add_task_until_unsubscribed() -> None:
    seen: list[TaskEvent] = []
    stop = afterward.on_event(seen.append)
    try:
        assert hooked()
        entry = BackgroundTasks().add_task(job)
    finally:
        stop()
    BackgroundTasks().add_task(job)
    assert [(e.kind, e.name, e.id, e.attempt, e.task) for e in seen] == [
        ("queued", f"{__name__}.job", entry.id, 0, entry)
    ]
    assert not hooked()
    stop()  # a second call is harmless


def test_a_failing_callback_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: TaskEvent) -> None:
        raise RuntimeError("boom")

    seen: list[str] = []
    stops = [afterward.on_event(broken), afterward.on_event(lambda e: seen.append(e.kind))]
    try:
        entry = BackgroundTasks().add_task(job)
        emit("succeeded", entry, 1, 0.5)
    finally:
        for stop in stops:
            stop()
    assert seen == ["queued", "succeeded"]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 2
    assert "failed on the queued event of" in failures[0].getMessage()


def test_counts_add_up_per_outcome() -> None:
    before = counts()
    assert set(before) == {"succeeded", "failed", "retried", "cancelled", "abandoned"}
    count("failed")
    count("retried", 3)
    after = counts()
    assert after["failed"] == before["failed"] + 1
    assert after["retried"] == before["retried"] + 3
    assert after["succeeded"] == before["succeeded"]


def test_attempt_scope_registration_and_removal() -> None:
    @contextlib.contextmanager
    def scope(task: object, attempt: int) -> Iterator[None]:
        yield

    remove = afterward.add_attempt_scope(scope)
    assert scopes == [scope]
    assert hooked()
    remove()
    assert not hooked()


def test_non_callables_are_refused() -> None:
    with pytest.raises(TypeError, match="on_event"):
        afterward.on_event("print")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="add_attempt_scope"):
        afterward.add_attempt_scope(None)  # type: ignore[arg-type]
