"""CeleryBackend's checks at add_task, and the allowlist, without a broker or a worker."""

from __future__ import annotations

import datetime
import functools
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "apps"))

import celery_tasks

import afterward
from afterward import BackgroundTasks
from afterward._backend import enqueue_entries
from afterward.celery import CeleryBackend, register_task
from afterward.celery._registry import find_by_message


def collector() -> BackgroundTasks:
    # Nothing connects before a task is enqueued: these tests need no broker.
    return BackgroundTasks(backend=CeleryBackend(celery_tasks.make_app("redis://127.0.0.1:1/0")))


def not_registered(key: str, value: str) -> None:
    """Module level, but neither decorated nor registered."""


def registered_here(key: str) -> None:
    """Registered by a test under a name of its own."""


@afterward.task(retry_on=ConnectionError, retries=2)
def picky(key: str) -> None:
    """Retries connection errors only."""


def test_registered_functions_are_accepted_decorated_or_registered_explicitly() -> None:
    tasks = collector()
    tasks.add_task(celery_tasks.record, "k", "v")
    tasks.add_task(celery_tasks.arecord, "k", "v")
    tasks.add_task(celery_tasks.plain, "k", "v")
    # A call-site override of a decorated task is still that registered function.
    tasks.add_task(afterward.task(celery_tasks.flaky, retries=5), "k", "v", 1)
    assert len(tasks.tasks) == 4


def test_an_unregistered_function_is_refused_with_how_to_register_it() -> None:
    with pytest.raises(TypeError) as info:
        collector().add_task(not_registered, "k", "v")
    message = str(info.value)
    assert "test_celery_backend.not_registered is not registered with afterward" in message
    assert "@afterward.task at module level" in message
    assert "afterward.celery.register_task(not_registered)" in message


def test_a_call_site_task_of_an_undecorated_function_is_refused() -> None:
    with pytest.raises(TypeError, match="is not registered"):
        collector().add_task(afterward.task(not_registered, retries=1), "k", "v")


def test_lambdas_and_nested_functions_are_refused_saying_why() -> None:
    def nested(value: str) -> None:
        """Defined inside a function."""

    with pytest.raises(TypeError, match="it is a lambda"):
        collector().add_task(lambda value: None, "v")
    with pytest.raises(TypeError, match="function defined inside a function"):
        collector().add_task(nested, "v")
    with pytest.raises(TypeError, match="function defined inside a function"):
        register_task(nested)


def test_a_function_of_the_script_being_run_is_refused() -> None:
    copy = types.FunctionType(not_registered.__code__, {}, "script_task")
    copy.__module__ = "__main__"
    with pytest.raises(TypeError, match="__main__"):
        collector().add_task(copy, "k", "v")


def test_an_argument_json_cannot_carry_is_named() -> None:
    with pytest.raises(TypeError) as info:
        collector().add_task(celery_tasks.record, "k", object())  # type: ignore[arg-type]
    message = str(info.value)
    assert "Argument 'value' of celery_tasks.record" in message
    assert "cannot be serialized" in message


def test_an_argument_that_would_come_back_changed_is_named() -> None:
    with pytest.raises(TypeError) as info:
        collector().add_task(celery_tasks.record, "k", value=("a", "b"))  # type: ignore[arg-type]
    assert "Argument 'value'" in str(info.value)
    assert "comes back as ['a', 'b'] (list)" in str(info.value)


def test_values_kombu_json_carries_are_accepted() -> None:
    tasks = collector()
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    tasks.add_task(celery_tasks.record, "k", {"when": when, "ids": [1, 2]})  # type: ignore[arg-type]
    assert len(tasks.tasks) == 1


def test_retry_on_cannot_change_at_the_call_site() -> None:
    tasks = collector()
    tasks.add_task(afterward.task(picky, retries=4), "k")  # same retry_on: fine
    with pytest.raises(TypeError, match=r"Set retry_on in the @afterward\.task decorator"):
        tasks.add_task(afterward.task(picky, retry_on=OSError), "k")


def test_register_task_refuses_a_name_taken_by_another_function() -> None:
    register_task(registered_here, name="tests.registered_here")
    register_task(registered_here, name="tests.registered_here")  # the same again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_task(picky, name="tests.registered_here")
    with pytest.raises(TypeError, match="expects a function"):
        register_task(42)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="non-empty string"):
        register_task(registered_here, name="")


def test_the_worker_finds_only_registered_functions_and_imports_nothing() -> None:
    assert find_by_message("celery_tasks.record", "celery_tasks:record") is not None
    assert find_by_message("celery_tasks.plain", None) is not None
    assert find_by_message("os.system", "os:system") is None
    assert find_by_message("posix.system", "posix:system") is None
    assert find_by_message("celery_tasks.unregistered", "celery_tasks:unregistered") is None
    assert find_by_message("celery_tasks.record", "celery_tasks:plain") is None  # name mismatch
    assert find_by_message(["x"], "celery_tasks:record") is None
    assert find_by_message("celery_sentinel.mark", "celery_sentinel:mark") is None
    assert find_by_message("celery_tasks.gone", "celery_tasks:gone") is None
    assert find_by_message("celery_tasks.gone", "celery_tasks:record.gone") is None
    assert "celery_sentinel" not in sys.modules


def test_backend_options_are_checked() -> None:
    app = celery_tasks.make_app("redis://127.0.0.1:1/0")
    with pytest.raises(ValueError, match="handoff"):
        CeleryBackend(app, handoff="whenever")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"celery\.Celery application"):
        CeleryBackend(object())
    backend = CeleryBackend(app, handoff="after_response", queue="q")
    assert backend.handoff == "after_response"
    assert "after_response" in repr(backend)


def spread(key: str, *values: object, **labels: object) -> None:
    """Takes any number of values and labels."""


register_task(spread)


def test_variadic_arguments_are_named_one_by_one() -> None:
    tasks = collector()
    with pytest.raises(TypeError, match=r"Argument values\[1\] of test_celery_backend\.spread"):
        tasks.add_task(spread, "k", 1, {2})
    with pytest.raises(TypeError, match=r"Argument 'color' of test_celery_backend\.spread"):
        tasks.add_task(spread, "k", color=(1, 2))


def test_a_partial_is_refused_saying_only_functions_travel() -> None:
    with pytest.raises(TypeError, match="only functions defined with def at module level"):
        collector().add_task(functools.partial(celery_tasks.plain, "k"), "v")


def test_arguments_of_a_function_without_a_signature_are_numbered() -> None:
    register_task(max)  # a builtin: inspect cannot read its signature
    tasks = collector()
    tasks.add_task(max, 1, 2)
    with pytest.raises(TypeError, match=r"Argument #2 of builtins\.max"):
        tasks.add_task(max, 1, {2})
    with pytest.raises(TypeError, match=r"Argument 'key' of builtins\.max"):
        tasks.add_task(max, [1], key={len})  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_publish_failing_midway_names_apart_the_tasks_already_queued(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = collector()
    backend = tasks.backend
    assert isinstance(backend, CeleryBackend)
    sent: list[str] = []

    def send_task(name: str, **message: object) -> None:
        if len(sent) == 2:
            raise ConnectionError("the broker went away")
        sent.append(str(message["task_id"]))

    backend.celery_app.send_task = send_task
    first = tasks.add_task(celery_tasks.record, "k", "1")
    second = tasks.add_task(celery_tasks.arecord, "k", "2")
    third = tasks.add_task(celery_tasks.plain, "k", "3")
    assert not await enqueue_entries(backend, [first, second, third])
    assert sent == [first.id, second.id]
    [error] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "Could not queue 1 of 3 background task(s) on CeleryBackend (ConnectionError" in error
    assert "they will not run: celery_tasks.plain." in error
    assert "queued before the failure will run: celery_tasks.record, celery_tasks.arecord." in error
    assert (first.status, second.status, third.status) == ("pending", "pending", "abandoned")
