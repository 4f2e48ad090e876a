"""RecordingBackend's assertions: what they accept, and messages that show what was recorded."""

from __future__ import annotations

import functools
from unittest.mock import ANY

import anyio
import pytest

from afterward import BackgroundTasks, task
from afterward.testing import RecordingBackend, record_tasks


def send_email(to: str, *, subject: str = "hello") -> None:
    raise AssertionError("recorded, never run")


def audit(event: str) -> None:
    raise AssertionError("recorded, never run")


@task(name="billing.charge", retries=3)
def charge(amount: int) -> None:
    raise AssertionError("recorded, never run")


def recorded_from(*calls: tuple[object, ...]) -> RecordingBackend:
    """Record one collector holding `calls`, each `(func, *args)`."""
    tasks = BackgroundTasks()
    for func, *args in calls:
        tasks.add_task(func, *args)  # type: ignore[arg-type]
    with record_tasks() as recorded:
        anyio.run(tasks)
    return recorded


def test_assert_called_needs_exactly_the_arguments() -> None:
    recorded = recorded_from((send_email, "a@b.c"), (audit, "signup"))
    assert recorded.assert_called(send_email, "a@b.c").args == ("a@b.c",)
    with pytest.raises(AssertionError) as info:
        recorded.assert_called(send_email, "a@b.c", subject="hello")
    assert str(info.value) == (
        f"No task {__name__}.send_email('a@b.c', subject='hello') was recorded. "
        f"Recorded: {__name__}.send_email('a@b.c'), {__name__}.audit('signup')."
    )
    with pytest.raises(AssertionError, match=r"No task .*\.send_email\(\) was recorded"):
        recorded.assert_called(send_email)


def test_any_stands_for_one_value_and_calls_to_for_any_arguments() -> None:
    recorded = recorded_from((send_email, "a@b.c"), (send_email, "d@e.f"))
    recorded.assert_called(send_email, ANY)
    assert [call.args for call in recorded.calls_to(send_email)] == [("a@b.c",), ("d@e.f",)]
    assert recorded.calls_to(audit) == []


def test_a_policy_task_is_matched_by_its_task_object_its_function_or_its_name() -> None:
    recorded = recorded_from((charge, 10))
    call = recorded.assert_called(charge, 10)
    assert recorded.assert_called(charge.func, 10) is call
    assert recorded.assert_called("billing.charge", 10) is call
    assert call.policy is not None
    assert (call.name, call.policy.retries) == ("billing.charge", 3)
    assert repr(call) == "<RecordedTask billing.charge(10)>"
    with pytest.raises(AssertionError, match=r"^No task billing\.charge\(11\) was recorded"):
        recorded.assert_called(charge, 11)


def test_a_partial_is_recorded_as_it_was_added() -> None:
    partial = functools.partial(send_email, subject="hi")
    recorded = recorded_from((partial, "a@b.c"))
    recorded.assert_called(partial, "a@b.c")
    assert recorded.calls_to(send_email) == []  # the function recorded is the partial


def test_assert_called_once_counts_the_calls_then_checks_their_arguments() -> None:
    recorded = recorded_from((send_email, "a@b.c"), (audit, "x"), (audit, "y"))
    assert recorded.assert_called_once(send_email, "a@b.c").args == ("a@b.c",)
    with pytest.raises(AssertionError, match=r"Expected .*send_email\('z'\), recorded .*'a@b\.c'"):
        recorded.assert_called_once(send_email, "z")
    with pytest.raises(AssertionError, match=r"Expected one task calling .*\.audit, found 2\."):
        recorded.assert_called_once(audit, "x")
    with pytest.raises(AssertionError, match=r"calling billing\.charge, found 0"):
        recorded.assert_called_once(charge, 1)


def test_assert_not_called_for_one_function_or_for_any() -> None:
    recorded = recorded_from((audit, "x"))
    recorded.assert_not_called(send_email)
    with pytest.raises(AssertionError, match=r"No task calling .*\.audit was expected, .*'x'\)"):
        recorded.assert_not_called(audit)
    with pytest.raises(AssertionError, match=r"^No task was expected, but recorded: .*audit"):
        recorded.assert_not_called()
    RecordingBackend().assert_not_called()


def test_an_empty_recorder_says_nothing_was_recorded() -> None:
    with pytest.raises(AssertionError, match=r"Nothing was recorded\.$"):
        RecordingBackend().assert_called(audit, "x")


def test_clear_forgets_and_the_sequence_views_follow_the_order() -> None:
    recorded = recorded_from((audit, "1"), (send_email, "2"))
    assert len(recorded) == 2
    assert [call.args for call in recorded] == [("1",), ("2",)]
    assert recorded.names == [f"{__name__}.audit", f"{__name__}.send_email"]
    assert recorded.pending == recorded.calls
    assert repr(recorded) == (
        f"<RecordingBackend [{__name__}.audit('1'), {__name__}.send_email('2')]>"
    )
    recorded.clear()
    assert (len(recorded), recorded.names) == (0, [])


def test_a_name_that_was_not_recorded_is_named_in_the_message() -> None:
    with pytest.raises(AssertionError, match=r"^Expected one task calling mail\.send, found 0\."):
        RecordingBackend().assert_called_once("mail.send")
