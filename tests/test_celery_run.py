"""The worker's task `afterward.run`, executed in this process by Celery itself (`apply`).

The same task runs in real workers in `test_celery_worker.py`; here Celery's eager execution
runs it in the test process, so every branch of the policy mapping is seen, without a broker.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from celery import Celery

import afterward
from afterward import BackgroundTasks
from afterward.celery import RUN_TASK, TIME_LIMIT_GRACE, CeleryBackend, register

calls: list[str] = []
attempts: dict[str, int] = {}


@afterward.task
def remember(value: str) -> None:
    calls.append(value)


@afterward.task(retries=2, backoff=0.0, jitter=False)
def fails_twice(value: str) -> None:
    attempts[value] = attempts.get(value, 0) + 1
    if attempts[value] <= 2:
        raise ConnectionError(f"attempt {attempts[value]}")
    calls.append(value)


@afterward.task(retries=3, retry_on=ConnectionError)
def fails_with_value_error(value: str) -> None:
    attempts[value] = attempts.get(value, 0) + 1
    raise ValueError(value)


@afterward.task(timeout=0.05)
async def too_slow(value: str) -> None:
    await anyio.sleep(5)
    calls.append(value)


@afterward.task
async def remember_async(value: str) -> None:
    await anyio.sleep(0)
    calls.append(value)


@afterward.task(name="emails.welcome")
def named(value: str) -> None:
    calls.append(value)


@pytest.fixture
def run() -> Any:
    calls.clear()
    attempts.clear()
    app = Celery("test_celery_run", set_as_current=False)
    task = register(app)
    assert register(app) is task  # once per app
    assert task.name == RUN_TASK
    assert task.acks_late
    assert task.reject_on_worker_lost
    return task


def message(func: afterward.Task[..., Any], *args: object, **options: object) -> list[object]:
    return [func.name, f"{func.func.__module__}:{func.func.__qualname__}", list(args), {}, options]


def test_a_registered_function_runs_with_its_arguments(run: Any) -> None:
    run.apply(args=message(remember, "a"))
    run.apply(args=message(remember_async, "b"))
    assert calls == ["a", "b"]


def test_failures_are_retried_with_celery_s_retry(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    run.apply(args=message(fails_twice, "c"))
    assert calls == ["c"]
    assert attempts == {"c": 3}
    assert "test_celery_run.fails_twice failed on attempt 2 of 3" in caplog.text


def test_the_message_s_retries_override_the_decorator_s(run: Any) -> None:
    result = run.apply(args=message(fails_twice, "d", retries=1))
    assert result.failed()
    assert attempts == {"d": 2}
    assert calls == []


def test_an_exception_outside_retry_on_is_final(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    result = run.apply(args=message(fails_with_value_error, "e"))
    assert result.failed()
    assert attempts == {"e": 1}
    assert "failed on attempt 1 of 4 (ValueError: e)" in caplog.text


def test_an_async_attempt_past_its_timeout_is_cancelled(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    result = run.apply(args=message(too_slow, "f"))
    assert isinstance(result.result, TimeoutError)
    assert calls == []


def test_options_a_sender_could_not_have_sent_are_ignored(run: Any) -> None:
    bad = {"retries": -1, "backoff": "soon", "jitter": 1, "timeout": 0, "unknown": 3}
    run.apply(args=message(fails_twice, "g", **bad))
    assert attempts == {"g": 3}  # the decorator's retries=2 still apply
    run.apply(args=[*message(remember, "h")[:4], "not a dict"])
    run.apply(args=message(remember, "i", timeout=None, jitter=False))
    assert calls == ["g", "h", "i"]


@pytest.mark.parametrize(
    "args",
    [
        ["os.system", "os:system", ["true"], {}, {}],
        ["test_celery_run.remember", "test_celery_run:remember", "not a list", {}, {}],
        ["test_celery_run.remember", "test_celery_run:remember", [], ["not a dict"], {}],
        ["test_celery_run.remember", None, ["x"], {}, {}],
    ],
)
def test_anything_else_is_refused_and_logged(
    run: Any, args: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    result = run.apply(args=args, task_id="forged-1")
    assert result.successful()  # acknowledged, never retried
    assert calls == []
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert "Refusing Celery message forged-1" in record.getMessage()


def test_a_task_with_a_name_of_its_own_is_found_by_that_name(run: Any) -> None:
    run.apply(args=message(named, "j"))
    assert calls == ["j"]
    assert message(named, "j")[:2] == ["emails.welcome", "test_celery_run:named"]


def test_what_the_web_side_sends_is_what_the_worker_runs(run: Any) -> None:
    backend = CeleryBackend(Celery("web", set_as_current=False))
    tasks = BackgroundTasks(backend=backend)
    sent = [
        tasks.add_task(named, "k"),
        tasks.add_task(afterward.task(fails_twice, retries=3), "l"),
        tasks.add_task(too_slow, "m"),
    ]
    messages = [backend._message(entry) for entry in sent]
    assert [m["task_id"] for m in messages] == [entry.id for entry in sent]
    assert messages[2]["time_limit"] == 0.05 + TIME_LIMIT_GRACE
    for message_ in messages:
        run.apply(args=message_["args"])
    assert calls == ["k", "l"]
    assert attempts == {"l": 3}
