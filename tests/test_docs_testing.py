"""Every code block of docs/testing.md runs, and the tests it shows pass (on asyncio and trio)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import Any, cast

import pytest

import afterward._recording
from afterward.testing import IdleWaiter, record_tasks
from docs_blocks import blocks, run_blocks

PAGE = "testing.md"

pytest_plugins = ["pytester"]

# On Python 3.10 there is no httpx2 (see pyproject.toml), and recent Starlette's TestClient warns
# that it falls back to httpx; the examples are the same either way.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


def test_every_block_of_the_page_is_run_by_a_test_here() -> None:
    assert list(blocks(PAGE)) == [
        "app",
        "testclient",
        "httpx",
        "record",
        "record-async",
        "held",
        "inject-direct",
        "middleware-app",
        "wait-idle-sync",
        "wait-idle-async",
        "fixtures",
        "caplog",
        "fixture",
    ]


def test_the_testclient_example_sees_the_task_already_run() -> None:
    example = run_blocks(PAGE, "app", "testclient")
    example.test_sign_up_sends_a_welcome()


@pytest.mark.anyio
async def test_the_httpx_example_sees_the_task_already_run() -> None:
    example = run_blocks(PAGE, "app", "httpx")
    await example.test_sign_up_sends_a_welcome_async()


def test_the_record_example_asserts_on_the_queued_task_then_runs_it() -> None:
    example = run_blocks(PAGE, "app", "testclient", "record")
    example.test_sign_up_queues_a_welcome_in_french()
    assert afterward._recording.recorder is None  # the block has ended: tasks run again
    example.outbox.clear()
    example.test_sign_up_sends_a_welcome()


@pytest.mark.anyio
async def test_the_async_record_example_sees_the_policy_then_runs_the_task() -> None:
    example = run_blocks(PAGE, "app", "record-async")
    await example.test_create_account_notifies_sales_with_retries()


def test_the_held_collector_example_sees_the_queued_task_and_nothing_runs() -> None:
    example = run_blocks(PAGE, "app", "testclient", "held")
    example.test_sign_up_queues_a_welcome()
    assert example.app.dependency_overrides == {}


def test_without_the_override_the_held_example_would_fail() -> None:
    """The example's assertions are not vacuous: with the real collector the task runs."""
    example = run_blocks(PAGE, "app", "testclient", "held")
    example.test_sign_up_sends_a_welcome()
    assert example.outbox == ["welcome ada@example.com (fr)"]


@pytest.mark.anyio
async def test_the_inject_example_inspects_then_runs_the_tasks() -> None:
    example = run_blocks(PAGE, "app", "inject-direct")
    await example.test_register_queues_a_welcome()


def test_the_caplog_example_finds_the_logged_failure(caplog: pytest.LogCaptureFixture) -> None:
    example = run_blocks(PAGE, "app", "testclient", "caplog")
    example.test_a_failing_task_is_logged_and_the_next_one_runs(caplog)


def run_fixture(fixture: Any, caplog: pytest.LogCaptureFixture, test: Callable[[], None]) -> None:
    """Drive the page's autouse fixture around `test` as pytest would."""
    body = cast(Callable[[pytest.LogCaptureFixture], Generator[None]], fixture.__wrapped__)
    steps = body(caplog)
    next(steps)
    test()
    with pytest.raises(StopIteration):
        next(steps)


def test_the_fixture_fails_a_test_whose_task_failed(caplog: pytest.LogCaptureFixture) -> None:
    example = run_blocks(PAGE, "app", "testclient", "caplog", "fixture")
    with pytest.raises(AssertionError, match=r"background tasks failed: .*send_invoice failed"):
        run_fixture(
            example.fail_on_task_errors,
            caplog,
            lambda: example.test_a_failing_task_is_logged_and_the_next_one_runs(caplog),
        )


def test_the_fixture_lets_a_test_without_failures_pass(caplog: pytest.LogCaptureFixture) -> None:
    example = run_blocks(PAGE, "app", "testclient", "caplog", "fixture")
    with caplog.at_level(logging.INFO):
        run_fixture(example.fail_on_task_errors, caplog, example.test_sign_up_sends_a_welcome)


def test_the_testclient_example_waits_for_the_detached_task() -> None:
    example = run_blocks(PAGE, "app", "testclient", "middleware-app", "wait-idle-sync")
    example.test_an_invitation_sends_a_welcome()


@pytest.mark.anyio
async def test_the_httpx_example_runs_the_lifespan_and_waits_for_the_detached_task() -> None:
    example = run_blocks(PAGE, "app", "middleware-app", "wait-idle-async")
    await example.test_an_invitation_sends_a_welcome_async()


def test_the_fixture_examples_pass_given_the_fixtures_values() -> None:
    example = run_blocks(PAGE, "app", "testclient", "middleware-app", "fixtures")
    with record_tasks() as recorded:
        example.test_sign_up_queues_a_welcome_recorded(recorded)
    example.test_an_invitation_sends_a_welcome_waited(IdleWaiter())


def test_the_fixture_examples_get_their_fixtures_from_the_plugin(pytester: pytest.Pytester) -> None:
    page = blocks(PAGE)
    code = "\n\n".join(
        page[label][1] for label in ("app", "testclient", "middleware-app", "fixtures")
    )
    pytester.makepyfile(test_page=code)
    for name in ("recorded", "waited"):  # each in a fresh import of the module: a new outbox
        result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-k", name)
        result.assert_outcomes(passed=1, deselected=2)
