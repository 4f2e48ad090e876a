"""The allowlist: which functions a Celery message may name, on the web side and on the worker.

A function may be sent, and a worker runs it, only if it is registered with afterward:

- decorated with `@afterward.task` at module level: the module attribute at the function's
  qualified name is the `afterward.Task` wrapping it (found in `sys.modules`, never imported);
- or registered explicitly with `register_task(func)`, for a function that cannot be decorated.

A message names the function by its registered name and the place where it is defined
(`module:qualname`). The worker looks both up in the modules it has already imported and in the
explicit registrations; anything else (`os.system`, a function of a module the worker did not
import) is refused. Nothing is ever imported because a message asked for it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from .._callables import task_name
from .._policy import Task, TaskPolicy

__all__ = ["Registered", "find_by_function", "find_by_message", "location_of", "register_task"]

F = TypeVar("F", bound=Callable[..., Any])

_lock = threading.Lock()
_by_name: dict[str, Registered] = {}
_by_function: dict[Callable[..., Any], Registered] = {}

_HOW_TO_REGISTER = (
    "Decorate it with @afterward.task at module level, or call "
    "afterward.celery.register_task({name}) in a module that the web app and the Celery worker "
    "both import (the one that defines the Celery app, say)."
)


class Registered(NamedTuple):
    """A function a worker may run: its name, the function, and its decorator's policy."""

    name: str
    func: Callable[..., Any]
    policy: TaskPolicy | None
    location: str


def location_of(func: Callable[..., Any]) -> str:
    """Return `module:qualname` of `func`, or raise `TypeError` if a worker could never find it."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    name = task_name(func)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise TypeError(
            f"{func!r} cannot be sent to a Celery worker: only functions defined with def at "
            f"module level can, and this has no module and qualified name."
        )
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise TypeError(
            f"{name} cannot be sent to a Celery worker: it is a "
            f"{'lambda' if '<lambda>' in qualname else 'function defined inside a function'}, "
            f"which a worker cannot find. Define it with def at module level and decorate it "
            f"with @afterward.task."
        )
    if module == "__main__":
        raise TypeError(
            f"{name} is defined in the script being run (__main__), which a Celery worker does "
            f"not import. Move it to a module that the worker imports, and decorate it with "
            f"@afterward.task there."
        )
    return f"{module}:{qualname}"


def register_task(func: F, *, name: str | None = None) -> F:
    """Allow `func` to be sent to Celery workers and run there; return it unchanged.

    For a function that cannot be decorated with `@afterward.task` (a library's, say). Call it
    at import time in a module that both the web app and the worker import, typically the one
    that defines the Celery app, so that both sides know the function by the same name. An
    `afterward.Task` may be given too: it is registered with its policy.

    Args:
        func: A function defined at module level (or an `afterward.Task` wrapping one).
        name: The name it is sent under. Default: its `afterward.task` name, else
            `module.qualname`.

    Returns:
        `func` itself, so it can be used as a decorator.

    Raises:
        TypeError: `func` is a lambda, a nested function, defined in `__main__`, or not callable.
        ValueError: `name` is already registered for another function.
    """
    if isinstance(func, Task):
        target, policy = func.func, func.policy
        default = policy.name
    elif callable(func):
        target, policy, default = func, None, task_name(func)
    else:
        raise TypeError(f"register_task() expects a function, got {func!r}.")
    if name is None:
        name = default
    elif not isinstance(name, str) or not name:
        raise TypeError(f"register_task(name=...) must be a non-empty string, got {name!r}.")
    entry = Registered(name, target, policy, location_of(target))
    with _lock:
        existing = _by_name.get(name)
        if existing is not None and existing.func is not target:
            raise ValueError(
                f"The name {name!r} is already registered for {existing.location}; give "
                f"register_task(..., name=...) another name for {entry.location}."
            )
        _by_name[name] = entry
        _by_function[target] = entry
    return func


def find_by_function(func: Callable[..., Any]) -> Registered:
    """Return the registration of `func` (the web side, at `add_task`), or raise `TypeError`."""
    entry = _by_function.get(func)
    if entry is not None:
        return entry
    location = location_of(func)
    found = _resolve(location)
    if isinstance(found, Task) and found.func is func:
        return Registered(found.name, func, found.policy, location)
    raise TypeError(
        f"{task_name(func)} is not registered with afterward, so it cannot be sent to a Celery "
        f"worker (workers run registered functions only). "
        + _HOW_TO_REGISTER.format(name=func.__name__)
    )


def find_by_message(name: object, location: object) -> Registered | None:
    """Return what a message names, if it is registered on this worker; None otherwise."""
    if not isinstance(name, str):
        return None
    entry = _by_name.get(name)
    if entry is not None:
        return entry
    if not isinstance(location, str):
        return None
    found = _resolve(location)
    if isinstance(found, Task) and found.name == name:
        return Registered(name, found.func, found.policy, location)
    return None


def _resolve(location: str) -> object:
    """Return the object at `module:qualname` if its module is already imported; else None."""
    module_name, _, qualname = location.partition(":")
    module = sys.modules.get(module_name)  # never import: a message must not choose what runs
    if module is None or not qualname:
        return None
    found: object = module
    for part in qualname.split("."):
        # Plain attribute lookups only: class attributes are read without binding, so a
        # decorated method is found as its `Task`.
        try:
            found = vars(found)[part]
        except (TypeError, KeyError):
            return None
    return found
