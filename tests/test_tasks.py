"""The model: `BackgroundTask` (one call) and `BackgroundTasks` (the per-request collector)."""

from __future__ import annotations

import contextvars
import logging
import threading
from typing import Any

import anyio
import pytest
from starlette.background import BackgroundTask as StarletteTask
from starlette.background import BackgroundTasks as StarletteTasks
from starlette.responses import JSONResponse

import afterward
from afterward import BackgroundTask, BackgroundTasks

HERE = __name__  # the module name tasks defined here are logged under

user: contextvars.ContextVar[str] = contextvars.ContextVar("user", default="anonymous")


def write_log(message: str, *, level: str = "info") -> None:
    """A sync task."""


async def notify(address: str) -> None:
    """An async task."""


# --- BackgroundTasks: Starlette's surface -------------------------------------------------------


def test_collector_is_a_starlette_collector_accepted_as_a_response_background() -> None:
    tasks = BackgroundTasks()
    assert isinstance(tasks, StarletteTasks)
    assert isinstance(tasks, StarletteTask)
    response = JSONResponse({}, background=tasks)
    assert response.background is tasks


def test_collector_starts_empty() -> None:
    assert BackgroundTasks().tasks == []
    assert BackgroundTasks(tasks=None).tasks == []
    assert BackgroundTasks([]).tasks == []


def test_add_task_appends_an_entry_keeping_func_args_and_kwargs_and_returns_it() -> None:
    tasks = BackgroundTasks()
    result = tasks.add_task(write_log, "hello", level="debug")
    tasks.add_task(notify, "a@example.com")
    first, second = tasks.tasks
    assert result is first
    assert isinstance(first, BackgroundTask)
    assert (first.func, first.args, first.kwargs) == (write_log, ("hello",), {"level": "debug"})
    assert (first.name, first.is_async) == (f"{HERE}.write_log", False)
    assert isinstance(second, BackgroundTask)
    assert (second.func, second.args, second.kwargs) == (notify, ("a@example.com",), {})
    assert (second.name, second.is_async) == (f"{HERE}.notify", True)


def test_initial_tasks_are_kept_in_order_in_a_list_of_the_collectors_own() -> None:
    given = [StarletteTask(write_log, "a"), BackgroundTask(notify, "b")]
    tasks = BackgroundTasks(tasks=given)
    assert tasks.tasks == given
    assert tasks.tasks is not given
    given.append(StarletteTask(write_log, "c"))
    assert len(tasks.tasks) == 2


def test_options_have_starlette_compatible_defaults() -> None:
    tasks = BackgroundTasks()
    assert tasks.stop_on_error is False
    assert tasks.on_error is None
    assert tasks.limiter is None


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        BackgroundTasks([], True)  # type: ignore[call-arg]


def test_options_are_kept() -> None:
    limiter = anyio.CapacityLimiter(2)

    def on_error(task: StarletteTask, exc: Exception) -> None: ...

    tasks = BackgroundTasks(stop_on_error=True, on_error=on_error, limiter=limiter)
    assert tasks.stop_on_error is True
    assert tasks.on_error is on_error
    assert tasks.limiter is limiter


def test_non_callable_on_error_is_a_type_error_naming_the_parameter() -> None:
    with pytest.raises(TypeError, match=r"on_error must be a callable .* got 'log me'"):
        BackgroundTasks(on_error="log me")  # type: ignore[arg-type]


def test_pending_lists_the_tasks_not_started_yet() -> None:
    tasks = BackgroundTasks()
    tasks.add_task(write_log, "a")
    tasks.add_task(notify, "b")
    assert tasks.pending == tasks.tasks
    assert tasks.pending is not tasks.tasks  # a snapshot: changing it changes nothing


def test_collector_repr_names_its_tasks() -> None:
    tasks = BackgroundTasks(tasks=[StarletteTask(write_log, "a")])
    tasks.add_task(notify, "b")
    assert repr(tasks) == f"<BackgroundTasks [{HERE}.write_log, {HERE}.notify]>"
    assert repr(BackgroundTasks()) == "<BackgroundTasks []>"


def test_bad_task_is_refused_in_add_task_and_nothing_is_added() -> None:
    tasks = BackgroundTasks()
    with pytest.raises(TypeError):
        tasks.add_task(write_log)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        tasks.add_task(None)  # type: ignore[arg-type]
    assert tasks.tasks == []


# --- BackgroundTask ------------------------------------------------------------------------------


def test_background_task_is_a_starlette_task_with_a_name_and_a_kind() -> None:
    task = BackgroundTask(write_log, "hello")
    assert isinstance(task, StarletteTask)
    assert task.name == f"{HERE}.write_log"
    assert task.is_async is False
    assert BackgroundTask(notify, "a").is_async is True
    assert repr(task) == f"<BackgroundTask {HERE}.write_log>"


def test_background_task_captures_the_context_when_it_is_created() -> None:
    token = user.set("alice")
    try:
        task = BackgroundTask(write_log, "hello")
        user.set("bob")
    finally:
        user.reset(token)
    assert isinstance(task.context, contextvars.Context)
    assert task.context[user] == "alice"


@pytest.mark.anyio
async def test_lone_background_task_runs_with_afterwards_semantics(
    caplog: pytest.LogCaptureFixture,
) -> None:
    threads: list[int] = []

    def record_thread() -> None:
        threads.append(threading.get_ident())

    await BackgroundTask(record_thread)()
    assert threads != [threading.get_ident()]
    assert len(threads) == 1

    def fail() -> None:
        raise ValueError("isolated")

    await BackgroundTask(fail)()  # raises nothing
    (logged,) = [r for r in caplog.records if r.name == "afterward"]
    assert logged.levelno == logging.ERROR
    assert f"{HERE}.test_lone_background_task_runs_with_afterwards_semantics" in logged.getMessage()


@pytest.mark.anyio
async def test_lone_background_task_uses_afterwards_limiter() -> None:
    borrowed: list[float] = []

    def measure() -> None:
        limiter = afterward.current_default_thread_limiter
        borrowed.append(anyio.from_thread.run_sync(lambda: limiter().borrowed_tokens))

    await BackgroundTask(measure)()
    assert borrowed == [1]


def test_error_callback_alias_describes_on_error() -> None:
    def on_error(task: StarletteTask, exc: Exception) -> None: ...

    callback: afterward.ErrorCallback = on_error
    assert BackgroundTasks(on_error=callback).on_error is on_error


def noop_for_fill(n: int, key: str) -> None:
    pass


async def noop_async(n: int, key: str) -> None:
    pass


@pytest.mark.parametrize(
    "func",
    [
        noop_for_fill,
        afterward.task(noop_for_fill, retries=2),
        afterward.task(retries=1)(noop_async),
    ],
    ids=["plain", "policy", "async policy"],
)
def test_add_task_makes_the_entry_the_constructor_makes(func: Any) -> None:
    # `add_task` writes out what `BackgroundTask.__init__` writes (no call per task): the same
    # attributes with the same values, but for the moment and the captured context.
    added = BackgroundTasks().add_task(func, 1, key="v")
    made = BackgroundTask(func, 1, key="v")
    assert type(added) is type(made)
    assert vars(added).keys() == vars(made).keys()
    differ = {"queued_at", "context"}
    assert {k: v for k, v in vars(added).items() if k not in differ} == {
        k: v for k, v in vars(made).items() if k not in differ
    }
    assert made.queued_at >= added.queued_at > 0
    assert isinstance(added.context, contextvars.Context)
