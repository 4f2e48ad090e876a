"""`CeleryBackend`: the web side, which checks tasks at `add_task` and sends them to Celery."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import anyio.to_thread
from kombu import serialization

from .._backend import HANDOFFS, Backend, HandOff, PartlyQueued
from ._registry import find_by_function
from ._worker import RUN_TASK, TIME_LIMIT_GRACE, policy_options

if TYPE_CHECKING:
    import celery

    from .._task import BackgroundTask


__all__ = ["DEFAULT_RETRY_POLICY", "CeleryBackend"]

DEFAULT_RETRY_POLICY: Mapping[str, float] = {
    "max_retries": 2,
    "interval_start": 0.2,
    "interval_step": 0.5,
    "interval_max": 1.0,
}
"""How often a publish is retried when the broker cannot be reached: three tries within about
a second and a half, so that an unreachable broker is reported (a 503) within a few seconds."""

# kombu's serializer registry (kombu ships no type hints for it).
_dumps: Callable[..., tuple[str, str, Any]] = serialization.dumps
_loads: Callable[..., Any] = serialization.loads


class CeleryBackend(Backend):
    """Send tasks to Celery workers, durably, at-least-once.

    Each task goes to the workers as a message for the one Celery task `afterward.run`, which
    `afterward.celery.register(celery_app)` defines on the worker side. Only functions
    registered with afterward can be sent (`@afterward.task` at module level, or
    `afterward.celery.register_task`); their arguments must survive `serializer` unchanged. Both
    are checked at `add_task`, in the request.

    Args:
        celery_app: The Celery application whose broker receives the tasks.
        handoff: `"before_response"` (default): enqueue when the response starts, and answer 503
            if the broker cannot be reached, so a 2xx means "durably queued".
            `"after_response"`: enqueue after the response has been sent (lower latency; tasks
            are lost, with a log line, if the broker is down or the process dies first).
        serializer: A kombu serializer name for the messages (default `"json"`). The workers
            must accept it (Celery's `accept_content`).
        queue: The queue to send to. Default: the app's routing (`task_default_queue`).
        retry_policy: kombu's publish retry policy (`max_retries`, `interval_start`,
            `interval_step`, `interval_max`). Default: `DEFAULT_RETRY_POLICY`.
        options: Further `apply_async` options for every message (`priority`, `expires`...).

    Raises:
        ValueError: `handoff` is not one of the two hand-off points.
        TypeError: `celery_app` is not a Celery application.
    """

    supports_async = True
    supports_results = False
    supports_delay = False
    supports_retries = True

    def __init__(
        self,
        celery_app: celery.Celery,
        *,
        handoff: HandOff = "before_response",
        serializer: str = "json",
        queue: str | None = None,
        retry_policy: Mapping[str, float] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if handoff not in HANDOFFS:
            raise ValueError(
                f"handoff must be 'before_response' or 'after_response', got {handoff!r}."
            )
        if not callable(getattr(celery_app, "send_task", None)):
            raise TypeError(f"celery_app must be a celery.Celery application, got {celery_app!r}.")
        self.celery_app = celery_app
        self.handoff = handoff
        self.serializer = serializer
        self.queue = queue
        self.retry_policy = dict(DEFAULT_RETRY_POLICY if retry_policy is None else retry_policy)
        self.options = dict(options or {})

    def __repr__(self) -> str:
        return f"<CeleryBackend {self.celery_app.main or 'celery'} handoff={self.handoff!r}>"

    def validate(self, task: BackgroundTask) -> None:
        """Check that `task` is registered and that its arguments survive the serializer.

        Raises:
            TypeError: the function is not registered (the message says how to register it), a
                call-site `retry_on` differs from the registered one, or an argument does not
                come back unchanged from the serializer (the message names it).
        """
        super().validate(task)
        registered = find_by_function(task.func)
        policy = task.policy
        registered_retry_on = (
            (Exception,) if registered.policy is None else registered.policy.retry_on
        )
        if policy is not None and policy.retry_on != registered_retry_on:
            raise TypeError(
                f"{registered.name} is sent to Celery with retry_on={policy.retry_on!r}, but the "
                f"worker only knows the registered retry_on={registered_retry_on!r} (exception "
                f"classes do not travel in messages). Set retry_on in the @afterward.task "
                f"decorator instead of at the call site."
            )
        self._check_arguments(task)

    async def enqueue(self, tasks: Sequence[BackgroundTask]) -> None:
        """Publish one message per task to the broker, in order (in a worker thread).

        Raises:
            PartlyQueued: the broker failed after the first tasks were queued (they will run).
            Exception: the broker could not be reached after `retry_policy`; nothing was sent.
        """
        messages = [(task, self._message(task)) for task in tasks]
        await anyio.to_thread.run_sync(self._publish, messages, abandon_on_cancel=True)

    def _message(self, task: BackgroundTask) -> dict[str, Any]:
        registered = find_by_function(task.func)
        options = policy_options(task.policy)
        message: dict[str, Any] = {
            **self.options,
            "args": [registered.name, registered.location, list(task.args), task.kwargs, options],
            "task_id": task.id,
            "serializer": self.serializer,
            "retry": True,
            "retry_policy": self.retry_policy,
        }
        if self.queue is not None:
            message["queue"] = self.queue
        timeout = options.get("timeout")
        if timeout is not None:
            message["time_limit"] = timeout + TIME_LIMIT_GRACE
        return message

    def _publish(self, messages: list[tuple[BackgroundTask, dict[str, Any]]]) -> None:
        app = self.celery_app
        sent: list[BackgroundTask] = []
        try:
            with app.producer_or_acquire() as producer:
                for task, message in messages:
                    app.send_task(RUN_TASK, producer=producer, **message)
                    sent.append(task)
        except Exception as exc:
            if sent:  # those are in the broker: they will run
                raise PartlyQueued(sent, exc) from exc
            raise

    def _check_arguments(self, task: BackgroundTask) -> None:
        """Raise `TypeError`, naming the argument, if one does not survive the serializer."""
        whole = [list(task.args), task.kwargs]
        ok, back = _round_trip(whole, self.serializer)
        if ok and _same(back, whole):
            return
        for label, value in _labelled_arguments(task):
            ok, back = _round_trip(value, self.serializer)
            if not ok or not _same(back, value):
                what = (
                    f"cannot be serialized ({back})"
                    if not ok
                    else f"comes back as {back!r} ({type(back).__name__})"
                )
                raise TypeError(
                    f"Argument {label} of {task.name} ({value!r}, {type(value).__name__}) does "
                    f"not survive Celery's {self.serializer!r} serializer: it {what}. Pass "
                    f"plain data instead (str, int, float, bool, None, lists and dicts of them; "
                    f"a list for a tuple, an id rather than an object) and rebuild the rest in "
                    f"the task."
                )
        # Each argument survives alone but not together (a serializer with shared state).
        raise TypeError(  # pragma: no cover - no serializer kombu ships does this
            f"The arguments of {task.name} do not survive Celery's {self.serializer!r} "
            f"serializer together; pass plain data instead."
        )


def _round_trip(value: object, serializer: str) -> tuple[bool, object]:
    """Serialize and deserialize `value`: (True, what comes back), or (False, the error)."""
    try:
        content_type, encoding, payload = _dumps(value, serializer=serializer)
        return True, _loads(payload, content_type, encoding, accept={content_type})
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


def _same(back: object, value: object) -> bool:
    """Whether `back` is `value` as the task would see it: equal, and of the same types all the
    way down (an `IntEnum` that comes back as an `int` is equal but is not the same), NaN being
    the same as NaN."""
    if type(back) is not type(value):
        return False
    if isinstance(value, float):
        return back == value or (math.isnan(value) and math.isnan(cast(float, back)))
    if isinstance(value, list | tuple):
        items = cast("list[object] | tuple[object, ...]", back)
        return len(items) == len(value) and all(map(_same, items, value))
    if isinstance(value, dict):
        mapping = cast("dict[object, object]", back)
        return mapping.keys() == value.keys() and all(
            _same(mapping[key], item) for key, item in value.items()
        )
    return back == value


def _labelled_arguments(task: BackgroundTask) -> list[tuple[str, object]]:
    """The task's arguments, each labelled with its parameter name when the signature tells it."""
    try:
        signature = inspect.signature(task.func)
        bound = signature.bind(*task.args, **task.kwargs).arguments
    except (TypeError, ValueError):
        return [(f"#{i + 1}", value) for i, value in enumerate(task.args)] + [
            (repr(key), value) for key, value in task.kwargs.items()
        ]
    labelled: list[tuple[str, object]] = []
    for key, value in bound.items():
        kind = signature.parameters[key].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            labelled.extend((f"{key}[{i}]", item) for i, item in enumerate(value))
        elif kind is inspect.Parameter.VAR_KEYWORD:
            labelled.extend((repr(name), item) for name, item in value.items())
        else:
            labelled.append((repr(key), value))
    return labelled
