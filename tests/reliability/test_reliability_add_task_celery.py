"""§5 for a durable backend: any arguments to `add_task` with `CeleryBackend` (Hypothesis).

Arguments of every kind (sets, bytes, tuples, objects, datetimes, decimals, UUIDs, enums, NaN
and infinities, huge integers, dicts with keys that are not strings, all nested) go to registered
functions (sync and async, with positional, variadic and keyword parameters). For each call:

- either `add_task` raises `TypeError` at once, naming the function and the first argument that
  does not survive the serializer (by its parameter name, `values[i]` or `'key'`);
- or the task is accepted, and then the worker's task (`afterward.run`, executed here by Celery
  itself with `apply`, on the message as it comes out of the serializer, as a worker receives
  it) calls the function with arguments equal to the ones given, of the same types.

Never a task that the web side accepts and the worker then runs with other values, or fails to
decode. No broker is needed: what goes over the wire is the serializer's payload, made here.
"""

from __future__ import annotations

import datetime
import enum
import math
import threading
from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kombu import serialization
from reliability_server import figure

import afterward
from afterward import BackgroundTasks
from afterward.celery import CeleryBackend, register

EXAMPLES = 300
RECEIVED: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
_lock = threading.Lock()


@afterward.task
def take_any(*values: Any, **labels: Any) -> None:
    with _lock:
        RECEIVED.append(("take_any", values, labels))


@afterward.task
async def take_any_async(*values: Any, **labels: Any) -> None:
    with _lock:
        RECEIVED.append(("take_any_async", values, labels))


@afterward.task
def take_two(first: Any, second: Any = None) -> None:
    with _lock:
        RECEIVED.append(("take_two", (first, second), {}))


FUNCTIONS: dict[str, afterward.Task[..., Any]] = {
    "take_any": take_any,
    "take_any_async": take_any_async,
    "take_two": take_two,
}


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Opaque:
    """An object of the application's own (equal by value, so equality is not the issue)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque)

    __hash__ = object.__hash__


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**300) | st.integers(max_value=-(2**63)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=10),
    st.datetimes(timezones=st.none() | st.just(datetime.timezone.utc)),
    st.dates(),
    st.times(),
    st.decimals(allow_nan=False, places=3),
    st.uuids(),
    st.complex_numbers(max_magnitude=1e6),
    st.sampled_from([Colour.RED, Level.HIGH, Opaque(), object(), ...]),
)
hashables = st.one_of(st.text(max_size=5), st.integers(), st.booleans(), st.none())
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
        st.dictionaries(hashables, inner, max_size=3),  # keys JSON turns into strings
        st.frozensets(hashables, max_size=3),
        st.sets(hashables, max_size=3),
    ),
    max_leaves=8,
)
names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


# kombu's serializer registry (kombu ships no type hints for it).
dumps: Callable[..., tuple[str, str, Any]] = serialization.dumps
loads: Callable[..., Any] = serialization.loads


def same(a: Any, b: Any) -> bool:
    """Equal, of the same types all the way down (NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(
            same(a[k], b[k]) and same(k, next(j for j in b if j == k)) for k in a
        )
    return bool(a == b)


def survives(value: Any) -> bool:
    """The oracle: `value` comes back from the JSON serializer the same (see `same`)."""
    try:
        content_type, encoding, payload = dumps(value, serializer="json")
        back = loads(payload, content_type, encoding, accept={content_type})
    except Exception:
        return False
    return same(back, value)


def labelled(func: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
    if func == "take_two":
        return [(repr(name), value) for name, value in zip(("first", "second"), args, strict=True)]
    return [(f"values[{i}]", value) for i, value in enumerate(args)] + [
        (repr(key), value) for key, value in kwargs.items()
    ]


@pytest.fixture(scope="module")
def worker_task() -> Any:
    """The worker's `afterward.run` task, for Celery's `apply` (eager, in this process)."""
    return register(Celery("reliability_worker", set_as_current=False))


def test_add_task_refuses_what_does_not_survive_or_the_worker_gets_it_unchanged(
    worker_task: Any,
) -> None:
    backend = CeleryBackend(Celery("reliability_web", set_as_current=False))
    seen = {"refused": 0, "run": 0}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        func=st.sampled_from(sorted(FUNCTIONS)),
        args=st.lists(values, max_size=3).map(tuple),
        kwargs=st.dictionaries(names, values, max_size=2),
    )
    # Equal after the round trip, but not the same: an IntEnum arrives as a plain int.
    @example(func="take_any", args=(Level.HIGH,), kwargs={})
    @example(func="take_two", args=("ok", {"level": Level.HIGH}), kwargs={})
    # Not equal after the round trip, and yet the same: NaN.
    @example(func="take_any", args=(), kwargs={"ratio": math.nan})
    @example(func="take_any_async", args=([math.inf, -math.inf, math.nan],), kwargs={})
    def check(func: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if func == "take_two":
            args, kwargs = (*args, None, None)[:2], {}
        RECEIVED.clear()
        tasks = BackgroundTasks(backend=backend)
        bad = [label for label, value in labelled(func, args, kwargs) if not survives(value)]
        try:
            entry = tasks.add_task(FUNCTIONS[func], *args, **kwargs)
        except TypeError as exc:
            message = str(exc)
            assert bad, f"refused, but every argument survives: {message}"
            assert message.startswith(f"Argument {bad[0]} of {FUNCTIONS[func].name} ("), message
            seen["refused"] += 1
            return
        assert not bad, f"accepted, but {bad} do not survive the serializer"
        sent = backend._message(entry)
        content_type, encoding, payload = dumps(sent["args"], serializer="json")
        received = loads(payload, content_type, encoding, accept={content_type})
        result = worker_task.apply(args=received)
        assert result.successful(), result.result
        assert len(RECEIVED) == 1
        name, got_args, got_kwargs = RECEIVED[0]
        assert name == func
        assert same(list(got_args), list(args)), (got_args, args)
        assert same(got_kwargs, kwargs), (got_kwargs, kwargs)
        seen["run"] += 1

    check()
    figure("add-task", "celery", examples=EXAMPLES, **seen)
    assert seen["refused"]  # both outcomes were tried
    assert seen["run"]
