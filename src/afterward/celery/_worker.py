"""The worker side: one Celery task, `afterward.run`, that runs registered functions only.

Every afterward task travels as a message for this one Celery task, carrying the function's
registered name and place, its arguments, and the numeric part of its policy. The worker looks the
function up in afterward's allowlist (see `_registry`), refuses anything else, and applies the
policy with Celery's own mechanisms: `self.retry(countdown=...)` for retries with backoff, a time
limit for timeouts. Async functions run on an event loop of their own (`anyio.run`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import weakref
from typing import TYPE_CHECKING, Any

import anyio

from .._callables import is_async_callable
from .._policy import TaskPolicy
from ._registry import find_by_message

if TYPE_CHECKING:
    import celery

__all__ = ["RUN_TASK", "TIME_LIMIT_GRACE", "policy_options", "register"]

logger = logging.getLogger("afterward")

RUN_TASK = "afterward.run"
"""The name of the one Celery task that runs afterward tasks on a worker."""

TIME_LIMIT_GRACE = 10.0
"""Seconds past an async task's `timeout` after which Celery's hard time limit ends its process
(a backstop for a coroutine that blocks its event loop, which no cancellation can stop)."""

_NUMERIC = ("retries", "backoff", "backoff_max", "jitter", "timeout")

_registered: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def policy_options(policy: TaskPolicy | None) -> dict[str, Any]:
    """Return the parts of `policy` a message carries (JSON-able); {} without a policy."""
    if policy is None:
        return {}
    return {key: getattr(policy, key) for key in _NUMERIC}


def register(celery_app: celery.Celery) -> celery.Task:
    """Let `celery_app`'s workers run afterward tasks; return the Celery task that does it.

    Call it once, in the module that defines the Celery app. The worker then runs the functions
    registered with afterward (`@afterward.task` at module level, or
    `afterward.celery.register_task`) whose modules it has imported: list them in the app's
    `include=`, import them from the app's module, or use `autodiscover_tasks()`. A message naming
    anything else is refused and logged at ERROR, never imported nor run.

    Delivery is at-least-once: the message is acknowledged after the function has returned
    (`acks_late`), and given back to the queue if the worker process dies while running it
    (`reject_on_worker_lost`), so a function may run more than once: make it idempotent.

    Args:
        celery_app: The Celery application the workers are started with (`celery -A ...`).

    Returns:
        The registered Celery task (named `afterward.run`).
    """
    run = _registered.get(celery_app)
    if run is None:
        run = _registered[celery_app] = celery_app.task(
            name=RUN_TASK,
            bind=True,
            acks_late=True,
            reject_on_worker_lost=True,
            ignore_result=True,
            shared=False,
        )(_run)
    return run


def _run(
    self: celery.Task,
    name: object,
    location: object,
    args: object,
    kwargs: object,
    options: object,
) -> None:
    """Run one afterward task on this worker, if it is registered (the body of `afterward.run`)."""
    registered = find_by_message(name, location)
    if registered is None or not isinstance(args, list) or not isinstance(kwargs, dict):
        logger.error(
            "Refusing Celery message %s for %r (at %r): it is not a task registered with "
            "afterward on this worker, so it is not run. Decorate the function with "
            "@afterward.task at module level (or call afterward.celery.register_task) and make "
            "the worker import its module (-A, include= or autodiscovery).",
            self.request.id,
            name,
            location,
        )
        return
    policy = _policy(registered.policy, registered.name, options)
    attempt = self.request.retries + 1
    func = registered.func
    try:
        if is_async_callable(func):
            anyio.run(functools.partial(_run_async, func, args, kwargs, policy.timeout))
        else:
            func(*args, **kwargs)
    except Exception as exc:
        if policy.retries_after(exc, attempt):
            delay = policy.delay(attempt)
            logger.warning(
                "Background task %s failed on attempt %d of %d (%s: %s); retrying in %.3g s.",
                registered.name,
                attempt,
                policy.retries + 1,
                type(exc).__name__,
                exc,
                delay,
            )
            raise self.retry(exc=exc, countdown=delay, max_retries=policy.retries) from exc
        logger.error(
            "Background task %s failed on attempt %d of %d (%s: %s).",
            registered.name,
            attempt,
            policy.retries + 1,
            type(exc).__name__,
            exc,
        )
        raise  # Celery records the failure and logs the traceback


def _policy(base: TaskPolicy | None, name: str, options: object) -> TaskPolicy:
    """The policy of one message: the registered one, with the message's numbers over it."""
    policy = base if base is not None else TaskPolicy(name=name)
    if not isinstance(options, dict):
        return policy
    known = {key: value for key, value in options.items() if _valid_option(key, value)}
    return dataclasses.replace(policy, **known) if known else policy


def _valid_option(key: object, value: object) -> bool:
    """Whether a message's policy option is one afterward sends, with a value it could send."""
    if key == "jitter":
        return isinstance(value, bool)
    if key == "timeout" and value is None:
        return True
    if key not in _NUMERIC or isinstance(value, bool):
        return False
    if key == "retries":
        return isinstance(value, int) and value >= 0
    return isinstance(value, (int, float)) and value >= 0 and (key != "timeout" or value > 0)


async def _run_async(
    func: Any, args: list[Any], kwargs: dict[str, Any], timeout: float | None
) -> None:
    if timeout is None:
        await func(*args, **kwargs)
        return
    with anyio.fail_after(timeout):
        await func(*args, **kwargs)
