"""`afterward.task`: as a decorator, at the call site, its validation, and `add_task` with it."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import afterward
from afterward import BackgroundTasks, Task, TaskPolicy, task


def send(to: str, subject: str = "") -> str:
    return f"{to}:{subject}"


async def fetch(url: str) -> str:
    return url


def test_bare_decorator_names_the_task_and_keeps_the_function_callable() -> None:
    wrapped = task(send)
    assert isinstance(wrapped, Task)
    assert wrapped.func is send
    assert wrapped.name == f"{__name__}.send"
    assert wrapped.policy == TaskPolicy(name=f"{__name__}.send")
    assert wrapped("a", subject="b") == "a:b"


def test_decorator_with_options_sets_the_policy() -> None:
    @task(name="mail", retries=3, backoff=0.5, backoff_max=4, jitter=False, always=True)
    def mail(to: str) -> str:
        return to

    assert mail.policy == TaskPolicy(
        name="mail", retries=3, backoff=0.5, backoff_max=4, jitter=False, always=True
    )
    assert mail("x") == "x"


@pytest.mark.anyio
async def test_decorated_async_function_is_still_a_coroutine_function() -> None:
    wrapped = task(fetch, timeout=2)
    assert inspect.iscoroutinefunction(wrapped.__call__)
    assert await wrapped("u") == "u"
    assert wrapped.policy.timeout == 2


def test_call_site_wrapper_overrides_the_decorators_policy() -> None:
    decorated = task(retries=5, backoff=1.0)(fetch)
    overridden = task(decorated, timeout=3, retries=1)
    assert overridden is not decorated
    assert overridden.func is fetch
    assert overridden.policy.retries == 1
    assert overridden.policy.backoff == 1.0
    assert overridden.policy.timeout == 3
    assert decorated.policy.timeout is None


def test_timeout_on_a_sync_function_is_refused_with_the_reason_and_the_fix() -> None:
    with pytest.raises(TypeError) as info:
        task(send, timeout=5)
    message = str(info.value)
    assert f"{__name__}.send, a sync function" in message
    assert "a thread cannot be stopped" in message
    assert "inside the function" in message


def test_timeout_on_a_sync_function_is_refused_as_a_decorator_too() -> None:
    with pytest.raises(TypeError, match="a thread cannot be stopped"):

        @task(timeout=1)
        def blocking() -> None: ...


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"retries": -1}, r"retries=\.\.\.\) must be a whole number >= 0, got -1"),
        ({"retries": 1.5}, "retries"),
        ({"retries": True}, "retries"),
        ({"backoff": "1"}, r"backoff=\.\.\.\) must be a number of seconds"),
        ({"backoff_max": -2}, "backoff_max"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": 0}, "would fail every attempt"),
        ({"jitter": 1}, r"jitter=\.\.\.\) must be True or False"),
        ({"always": "yes"}, "always"),
        ({"name": ""}, "non-empty string"),
        ({"retry_on": ValueError()}, "an exception class or a tuple"),
        ({"retry_on": (ValueError, int)}, "retry_on"),
        ({"retry_on": ()}, "retry_on"),
        ({"retry_on": KeyboardInterrupt}, "never retried"),
    ],
)
def test_bad_options_are_type_errors_naming_the_option(
    options: dict[str, object], match: str
) -> None:
    with pytest.raises(TypeError, match=match):
        task(fetch, **options)


def test_a_single_exception_class_is_accepted_for_retry_on() -> None:
    assert task(send, retry_on=ValueError).policy.retry_on == (ValueError,)


def test_not_a_function_and_a_coroutine_object_are_refused() -> None:
    with pytest.raises(TypeError, match="expects a function"):
        task(42)  # type: ignore[call-overload]
    coroutine = fetch("u")
    with pytest.raises(TypeError, match="coroutine object"):
        task(coroutine)  # type: ignore[call-overload]


def test_add_task_unwraps_the_task_and_returns_the_entry_with_its_policy() -> None:
    wrapped = task(send, retries=2, name="notify")
    tasks = BackgroundTasks()
    entry = tasks.add_task(wrapped, "to", subject="s")
    assert isinstance(entry, afterward.BackgroundTask)
    assert tasks.tasks == [entry]
    assert entry.func is send
    assert entry.policy is wrapped.policy
    assert entry.name == "notify"
    assert entry.is_async is False
    assert (entry.args, entry.kwargs) == (("to",), {"subject": "s"})


def test_add_task_checks_the_arguments_against_the_wrapped_function() -> None:
    with pytest.raises(TypeError, match=r"do not match .*send"):
        BackgroundTasks().add_task(task(send), "a", "b", "c")  # type: ignore[call-arg]


def test_an_async_task_is_classified_async_and_a_plain_entry_has_no_policy() -> None:
    tasks = BackgroundTasks()
    assert tasks.add_task(task(fetch), "u").is_async is True
    assert tasks.add_task(send, "x").policy is None


def test_a_decorated_method_is_bound_with_its_policy() -> None:
    class Mailer:
        @task(retries=1)
        def send(self, to: str) -> str:
            return f"sent {to}"

    mailer = Mailer()
    assert mailer.send("x") == "sent x"
    entry = BackgroundTasks().add_task(mailer.send, "y")
    assert entry.policy is not None
    assert entry.policy.retries == 1
    assert getattr(entry.func, "__self__", None) is mailer
    assert isinstance(Mailer.__dict__["send"], Task)
    assert Mailer.send is Mailer.__dict__["send"]  # from the class: the task itself
    assert repr(Mailer.send).startswith("<Task test_policy.")


def test_delay_doubles_up_to_the_cap_and_jitter_stays_within_half() -> None:
    policy = TaskPolicy(name="t", backoff=1.0, backoff_max=5.0, jitter=False)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    jittered = TaskPolicy(name="t", backoff=1.0, backoff_max=5.0)
    for attempt, full in ((1, 1.0), (2, 2.0), (5, 5.0)):
        assert full / 2 <= jittered.delay(attempt) <= full
    assert TaskPolicy(name="t").delay(3) == 0.0


def test_retries_after_counts_attempts_and_checks_the_type() -> None:
    policy = TaskPolicy(name="t", retries=2, retry_on=(ConnectionError,))
    assert policy.retries_after(ConnectionError(), 1)
    assert policy.retries_after(ConnectionError(), 2)
    assert not policy.retries_after(ConnectionError(), 3)
    assert not policy.retries_after(ValueError(), 1)


def test_a_task_looks_like_its_function_to_introspection() -> None:
    async def send_email(to: str, *, subject: str = "hi") -> None:
        """Send an e-mail."""

    def plain(n: int) -> int:
        return n

    made: Any
    for made in (task(send_email), task(retries=2)(send_email), task(task(plain), retries=1)):
        func = made.func
        assert made.__name__ == func.__name__
        assert made.__qualname__ == func.__qualname__
        assert made.__module__ == func.__module__
        assert made.__doc__ == func.__doc__
        assert made.__wrapped__ is func
        assert inspect.signature(made) == inspect.signature(func)
    wrapped: Any = task(send_email)
    assert inspect.iscoroutinefunction(wrapped.__wrapped__)


@task(retries=2)
def _module_level_task(n: int) -> int:
    return n


def test_a_task_pickles_by_reference_when_it_is_the_module_level_name() -> None:
    import pickle

    assert pickle.loads(pickle.dumps(_module_level_task)) is _module_level_task
    made = task(_module_level_task, retries=5)  # not the module's name: pickled by its parts
    copy = pickle.loads(pickle.dumps(made))
    assert copy.policy == made.policy
    assert copy(3) == 3


@pytest.mark.anyio
async def test_a_partial_of_a_task_keeps_its_arguments_and_the_policy() -> None:
    import functools

    seen: list[tuple[str, str, str]] = []

    @task(retries=1, name="greet")
    def greet(a: str, b: str, *, c: str) -> None:
        seen.append((a, b, c))

    tasks = BackgroundTasks()
    entry = tasks.add_task(functools.partial(functools.partial(greet, "k"), c="z"), "v")
    assert entry.name == "greet"
    assert entry.policy is not None
    assert entry.policy.retries == 1
    with pytest.raises(TypeError):
        tasks.add_task(functools.partial(greet, "k"), "v")  # c missing: refused at add_task
    await tasks()
    assert seen == [("k", "v", "z")]
    assert entry.status == "succeeded"
