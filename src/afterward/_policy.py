"""Task policies: `afterward.task`, the `Task` it returns and the `TaskPolicy` it carries.

`@task(retries=3, backoff=0.5)` on a function, or `task(send_email, timeout=10)` where the task is
added, gives the function a name and a policy (retries with exponential backoff, a timeout for
async functions, `always`). The decorated function stays a plain callable; `add_task` unwraps it:
the entry runs the function itself and carries the policy, which the runner applies.
"""

from __future__ import annotations

import dataclasses
import inspect
import random
import types
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

from typing_extensions import ParamSpec

from ._callables import TaskShape, TaskWrapper, describe, is_async_callable, task_name

__all__ = ["Task", "TaskPolicy", "task"]

P = ParamSpec("P")
R = TypeVar("R")

_UNSET: Any = object()


@dataclasses.dataclass(frozen=True)
class TaskPolicy:
    """How a task is run: its name, retries, backoff, timeout and whether it always runs.

    Attributes:
        name: The name used in every log line, event and metric about the task.
        retries: How many times a failed attempt is retried (so at most `retries + 1` attempts).
        backoff: Seconds before the first retry; each later retry waits twice as long as the
            previous one, up to `backoff_max`.
        backoff_max: The longest wait between two attempts, in seconds.
        jitter: Randomise each wait between half of it and all of it, so that tasks failing
            together do not retry together.
        retry_on: The exception types that are retried; any other failure is final at once.
        timeout: Seconds an attempt of an async function may take; it is then cancelled and
            fails with `TimeoutError` (retried if retries remain). None: no limit.
        always: Run the task even when the request failed (an error response, an exception,
            a client gone), where the other tasks are not run.
    """

    name: str
    retries: int = 0
    backoff: float = 0.0
    backoff_max: float = 60.0
    jitter: bool = True
    retry_on: tuple[type[Exception], ...] = (Exception,)
    timeout: float | None = None
    always: bool = False

    def delay(self, attempt: int) -> float:
        """Return the seconds to wait after failed attempt number `attempt` (1 for the first)."""
        wait = min(self.backoff_max, self.backoff * 2 ** (attempt - 1))
        if self.jitter and wait > 0:
            wait = random.uniform(wait / 2, wait)  # spreading retries, not secrets
        return float(wait)

    def retries_after(self, exc: BaseException, attempt: int) -> bool:
        """Return whether failed attempt number `attempt`, which raised `exc`, is retried."""
        return attempt <= self.retries and isinstance(exc, self.retry_on)


class Task(TaskWrapper, Generic[P, R]):
    """A function with a task policy, made by `afterward.task`.

    Calling it calls the function. Given to `add_task`, it is run with its policy: the entry's
    `func` is the function itself, and its `policy` is this task's.

    Attributes:
        func: The function.
        policy: Its `TaskPolicy`.
        name: The task's name (`policy.name`).
    """

    __slots__ = ("__weakref__", "_shape", "func", "policy")

    def __init__(self, func: Callable[P, R], policy: TaskPolicy) -> None:
        self.func = func
        self.policy = policy
        self._shape: TaskShape | None = None

    @property
    def name(self) -> str:
        """The task's name, used in logs, events and metrics."""
        return self.policy.name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function (no policy applies to a direct call)."""
        return self.func(*args, **kwargs)

    def __get__(self, instance: object, owner: type | None = None) -> Task[..., R]:
        # A decorated method: `obj.method` is the bound method, with the same policy.
        if instance is None:
            return self
        return _make(types.MethodType(self.func, instance), self.policy)

    def __repr__(self) -> str:
        return f"<Task {self.policy.name}>"

    def task_shape(self) -> TaskShape:
        """Return the shape `add_task` checks calls against: the function's, with the policy."""
        shape = self._shape
        if shape is None:
            shape = self._shape = describe(self.func).with_policy(self.func, self.policy)
        return shape


class _AsyncTask(Task[P, R]):
    """A `Task` of an async function: seen as async wherever a callable is classified."""

    __slots__ = ()

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:  # type: ignore[override]
        """Call the function and await it."""
        return await self.func(*args, **kwargs)  # type: ignore[misc]


@overload
def task(func: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(
    func: Callable[P, R],
    /,
    *,
    name: str = ...,
    retries: int = ...,
    backoff: float = ...,
    backoff_max: float = ...,
    jitter: bool = ...,
    retry_on: tuple[type[Exception], ...] | type[Exception] = ...,
    timeout: float | None = ...,
    always: bool = ...,
) -> Task[P, R]: ...
@overload
def task(
    *,
    name: str = ...,
    retries: int = ...,
    backoff: float = ...,
    backoff_max: float = ...,
    jitter: bool = ...,
    retry_on: tuple[type[Exception], ...] | type[Exception] = ...,
    timeout: float | None = ...,
    always: bool = ...,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...
def task(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str = _UNSET,
    retries: int = _UNSET,
    backoff: float = _UNSET,
    backoff_max: float = _UNSET,
    jitter: bool = _UNSET,
    retry_on: tuple[type[Exception], ...] | type[Exception] = _UNSET,
    timeout: float | None = _UNSET,
    always: bool = _UNSET,
) -> Any:
    """Give a function a task policy: as a decorator, or where the task is added.

        @task(retries=3, backoff=0.5)
        async def send_email(to: str) -> None: ...

        tasks.add_task(task(notify, timeout=10, always=True), user_id)

    Given a `Task`, returns a new one whose options override its policy's, so a call site can
    change what a decorator set. Calling the result calls the function.

    Args:
        func: The function (or a `Task`). Omitted: return a decorator.
        name: Name in logs, events and metrics. Default: `module.qualname` of the function.
        retries: Retries after a failed attempt (default 0).
        backoff: Seconds before the first retry (default 0); doubled at each retry.
        backoff_max: The cap on the wait between attempts, in seconds (default 60).
        jitter: Randomise each wait between half of it and all of it (default True).
        retry_on: Exception type(s) that are retried (default `Exception`).
        timeout: Seconds an attempt of an async function may take (default None: no limit).
        always: Run even when the request failed (default False).

    Returns:
        A `Task`, or a decorator that makes one.

    Raises:
        TypeError: an option has the wrong type or range, `func` is not callable, or `timeout`
            is given for a sync function.
    """
    options = {
        key: value
        for key, value in (
            ("name", name),
            ("retries", retries),
            ("backoff", backoff),
            ("backoff_max", backoff_max),
            ("jitter", jitter),
            ("retry_on", retry_on),
            ("timeout", timeout),
            ("always", always),
        )
        if value is not _UNSET
    }
    _check_options(options)
    if func is None:
        return lambda func: _wrap(func, options)
    return _wrap(func, options)


def _wrap(func: Callable[..., Any], options: dict[str, Any]) -> Task[..., Any]:
    if isinstance(func, Task):
        base, target = func.policy, func.func
    else:
        if inspect.iscoroutine(func):
            func.close()
            raise TypeError(
                "task() got a coroutine object, not a function: the function was called instead "
                "of being passed. Pass the function itself: task(func, ...), then "
                "add_task(that, *args)."
            )
        if not callable(func):
            raise TypeError(f"task() expects a function, got {func!r} ({type(func).__name__}).")
        base, target = TaskPolicy(name=task_name(func)), func
    policy = dataclasses.replace(base, **options) if options else base
    if policy.timeout is not None and not is_async_callable(target):
        raise TypeError(
            f"timeout={policy.timeout!r} was given for {policy.name}, a sync function: it runs "
            f"in a worker thread, and a thread cannot be stopped from outside, so the timeout "
            f"could not be enforced. Drop timeout= and put the limit inside the function "
            f"instead (e.g. your HTTP client's or database driver's timeout), or make the "
            f"function async."
        )
    return _make(target, policy)


def _make(func: Callable[..., Any], policy: TaskPolicy) -> Task[..., Any]:
    return (_AsyncTask if is_async_callable(func) else Task)(func, policy)


def _check_options(options: dict[str, Any]) -> None:
    if "name" in options and (not isinstance(options["name"], str) or not options["name"]):
        raise TypeError(f"task(name=...) must be a non-empty string, got {options['name']!r}.")
    if "retries" in options:
        _whole("retries", options["retries"])
    for key in ("backoff", "backoff_max"):
        if key in options:
            _seconds(key, options[key])
    if options.get("timeout") is not None:
        _seconds("timeout", options["timeout"])
        if options["timeout"] == 0:
            raise TypeError("task(timeout=0) would fail every attempt; give seconds > 0 or None.")
    for key in ("jitter", "always"):
        if key in options and not isinstance(options[key], bool):
            raise TypeError(f"task({key}=...) must be True or False, got {options[key]!r}.")
    if "retry_on" in options:
        options["retry_on"] = _exception_types(options["retry_on"])


def _whole(key: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"task({key}=...) must be a whole number >= 0, got {value!r}.")


def _seconds(key: str, value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise TypeError(f"task({key}=...) must be a number of seconds >= 0, got {value!r}.")


def _exception_types(value: object) -> tuple[type[Exception], ...]:
    types_ = value if isinstance(value, tuple) else (value,)
    if not types_ or not all(
        isinstance(kind, type) and issubclass(kind, Exception) for kind in types_
    ):
        raise TypeError(
            f"task(retry_on=...) must be an exception class or a tuple of them, such as "
            f"(ConnectionError, TimeoutError), got {value!r}. (Cancellations and exits, which are "
            f"not Exception subclasses, are never retried.)"
        )
    return types_
