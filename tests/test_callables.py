"""Validation at `add_task` time and the cached call shapes behind it (`afterward._callables`)."""

from __future__ import annotations

import functools
import gc
import inspect
import re
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from afterward import BackgroundTask, BackgroundTasks, _callables
from afterward._callables import check_call, describe, task_name

HERE = __name__  # the module name tasks defined here are logged under


def send_email(address: str, message: str = "") -> None:
    """A sync task with one required and one optional parameter."""


async def send_email_async(address: str, message: str = "") -> None:
    """The same task, async."""


def keyword_only(*, to: str, cc: str = "") -> None:
    """A task whose parameters can only be given by keyword."""


def positional_only(address: str, /, retries: int = 0) -> None:
    """A task whose first parameter can only be given by position."""


def positional_only_and_kwargs(address: str, /, **headers: str) -> None:
    """`address` by position; any keyword, even `address=`, goes to `headers`."""


def anything(*args: Any, **kwargs: Any) -> None:
    """A task that accepts every call."""


class Mailer:
    """Methods, classmethods and staticmethods as tasks."""

    def __init__(self, host: str) -> None:
        self.host = host

    def send(self, address: str) -> None:
        """A method: bound, its signature has no `self`."""

    async def send_async(self, address: str) -> None:
        """An async method."""

    @classmethod
    def build(cls, host: str) -> Mailer:
        return cls(host)

    @staticmethod
    def ping(host: str) -> None:
        """A staticmethod: a plain function."""


class SyncCallable:
    """Instances are tasks called through `__call__`; the class itself is called with `__init__`."""

    def __init__(self, label: str = "") -> None:
        self.label = label

    def __call__(self, first: int, second: int) -> None:
        """Two required parameters, unlike `__init__`."""


class AsyncCallable:
    """Instances are async tasks."""

    async def __call__(self, value: int) -> None:
        """One required parameter."""


class NoSignature:
    """A callable whose signature cannot be introspected, like some builtins."""

    __signature__ = "not a signature"  # makes inspect.signature raise TypeError

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        """Accepts anything, but nothing says so."""


class UnhashableCallable:
    """An unhashable callable whose `__call__` is not a Python function (so it is its own key)."""

    __hash__ = None  # type: ignore[assignment]
    __call__ = print  # a builtin is not a descriptor: `instance(x)` calls `print(x)`


def add(func: Callable[..., Any], *args: Any, **kwargs: Any) -> BackgroundTask:
    """Add a task to a fresh collector and return the entry it made."""
    tasks = BackgroundTasks()
    tasks.add_task(func, *args, **kwargs)
    (task,) = tasks.tasks
    assert isinstance(task, BackgroundTask)
    return task


# --- what is refused, and how it is said -------------------------------------------------------


@pytest.mark.parametrize("value", [None, 42, "send_email", [send_email]])
def test_non_callable_is_a_type_error_that_shows_the_value(value: object) -> None:
    with pytest.raises(TypeError, match="expects a callable") as raised:
        BackgroundTasks().add_task(value)  # type: ignore[arg-type]
    assert repr(value) in str(raised.value)
    assert "add_task(func, *args, **kwargs)" in str(raised.value)


def test_coroutine_object_is_a_type_error_showing_the_wrong_and_the_right_call() -> None:
    coroutine = send_email_async("a@example.com")
    with pytest.raises(TypeError, match="coroutine object") as raised:
        BackgroundTasks().add_task(coroutine)  # type: ignore[arg-type]
    message = str(raised.value)
    assert "send_email_async(...) was called instead of being passed" in message
    assert "add_task(send_email_async, *args, **kwargs)" in message
    assert "not add_task(send_email_async(*args, **kwargs))" in message


def test_refused_coroutine_object_is_closed_so_no_never_awaited_warning_appears() -> None:
    coroutine = send_email_async("a@example.com")
    tasks = BackgroundTasks()
    with pytest.raises(TypeError):
        tasks.add_task(coroutine)  # type: ignore[arg-type]
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED
    assert tasks.tasks == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del coroutine
        gc.collect()
    assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []


@pytest.mark.parametrize(
    ("func", "args", "kwargs", "reason"),
    [
        pytest.param(send_email, (), {}, "missing a required argument: 'address'", id="missing"),
        pytest.param(send_email, ("a", "b", "c"), {}, "too many positional", id="too-many"),
        pytest.param(send_email, ("a",), {"cc": "b"}, "unexpected keyword", id="unexpected-kw"),
        pytest.param(send_email, ("a",), {"address": "b"}, "multiple values", id="twice"),
        pytest.param(keyword_only, ("a",), {}, "too many positional", id="kw-only-by-position"),
        pytest.param(keyword_only, (), {"cc": "b"}, "missing a required argument", id="kw-missing"),
        pytest.param(positional_only, (), {"address": "a"}, "positional only", id="pos-only-by-kw"),
        pytest.param(
            positional_only_and_kwargs, (), {"address": "a"}, "positional only", id="pos-only-kw"
        ),
    ],
)
def test_arguments_that_do_not_bind_are_a_type_error_naming_the_function(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], reason: str
) -> None:
    tasks = BackgroundTasks()
    with pytest.raises(TypeError) as raised:
        tasks.add_task(func, *args, **kwargs)
    message = str(raised.value)
    assert f"do not match {HERE}.{func.__qualname__}(" in message
    assert reason in message
    assert f"pass the arguments {func.__qualname__} expects" in message
    assert tasks.tasks == []  # nothing half-added


def test_error_message_shows_the_call_made_by_types_never_the_values() -> None:
    # The message may reach a server's log: the arguments' values (personal data) must not.
    with pytest.raises(TypeError) as raised:
        BackgroundTasks().add_task(send_email, "a@example.com", "hi", urgent=True)  # type: ignore[call-arg]
    message = str(raised.value)
    assert "send_email(str, str, urgent=bool)" in message
    assert "a@example.com" not in message
    assert "'hi'" not in message
    assert "unexpected keyword argument 'urgent'" in message  # the parameter is named


def test_background_task_validates_its_call_when_it_is_created() -> None:
    with pytest.raises(TypeError, match=re.escape(f"{HERE}.send_email")):
        BackgroundTask(send_email)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="expects a callable"):
        BackgroundTask(1)  # type: ignore[arg-type]


# --- what is accepted --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("func", "args", "kwargs"),
    [
        pytest.param(send_email, ("a",), {}, id="required-only"),
        pytest.param(send_email, ("a", "b"), {}, id="all-positional"),
        pytest.param(send_email, (), {"address": "a", "message": "b"}, id="all-keyword"),
        pytest.param(keyword_only, (), {"to": "a"}, id="keyword-only"),
        pytest.param(positional_only, ("a",), {"retries": 3}, id="positional-only"),
        pytest.param(positional_only_and_kwargs, ("a",), {"address": "b"}, id="pos-only-and-kw"),
        pytest.param(anything, (1, 2, 3), {"x": 1, "y": 2}, id="var-args"),
        pytest.param(print, ("a", "b"), {"sep": "-"}, id="builtin-with-signature"),
    ],
)
def test_arguments_that_bind_are_accepted_and_kept_as_given(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    task = add(func, *args, **kwargs)
    assert task.func is func
    assert task.args == args
    assert task.kwargs == kwargs


def test_validation_agrees_with_python_on_every_call_shape() -> None:
    """The precomputed check says yes exactly when `inspect.Signature.bind` does."""

    def f(a: int, b: int = 0, /, c: int = 0, *, d: int, e: int = 0, **kw: int) -> None: ...

    def g(a: int, /, b: int, *rest: int, c: int = 0) -> None: ...

    calls: list[tuple[tuple[int, ...], dict[str, int]]] = [
        ((), {}),
        ((1,), {}),
        ((1,), {"d": 1}),
        ((1, 2), {"d": 1}),
        ((1, 2, 3), {"d": 1}),
        ((1, 2, 3, 4), {"d": 1}),
        ((1,), {"a": 1, "d": 1}),
        ((1,), {"c": 1, "d": 1, "z": 1}),
        ((1, 2, 3), {"c": 1, "d": 1}),
        ((), {"a": 1, "d": 1}),
        ((1, 2), {}),
        ((1,), {"b": 2}),
        ((1, 2, 3, 4, 5), {"c": 1}),
        ((1, 2), {"b": 2}),
        ((), {"b": 2}),
        ((1, 2), {"rest": 1}),
    ]
    for func in (f, g):
        signature = inspect.signature(func)
        for args, kwargs in calls:
            try:
                signature.bind(*args, **kwargs)
            except TypeError:
                expected = False
            else:
                expected = True
            assert describe(func).binds(args, kwargs) is expected, (func, args, kwargs)


def test_partial_is_checked_as_the_call_it_will_make() -> None:
    task = add(functools.partial(send_email, "a@example.com"), message="hi")
    assert task.name == f"{HERE}.send_email"
    assert task.is_async is False
    add(functools.partial(send_email, message="hi"), "a@example.com")
    # Arguments given to add_task override a partial's keywords, as calling it would.
    add(functools.partial(send_email, "a", message="hi"), message="bye")
    with pytest.raises(TypeError, match="missing a required argument: 'address'"):
        add(functools.partial(send_email, message="hi"))
    with pytest.raises(TypeError, match="too many positional"):
        add(functools.partial(send_email, "a", "b"), "c")


def test_partial_of_an_async_function_is_async() -> None:
    task = add(functools.partial(functools.partial(send_email_async, "a")))
    assert task.is_async is True
    assert task.name == f"{HERE}.send_email_async"


def test_bound_methods_are_checked_without_self() -> None:
    mailer = Mailer("smtp")
    assert add(mailer.send, "a").is_async is False
    assert add(mailer.send_async, "a").is_async is True
    assert add(Mailer.build, "smtp").name == f"{HERE}.Mailer.build"
    assert add(Mailer.ping, "smtp").name == f"{HERE}.Mailer.ping"
    with pytest.raises(TypeError, match=re.escape("Mailer.send(address)")):
        add(mailer.send)


def test_a_function_and_its_bound_method_are_checked_each_with_its_own_signature() -> None:
    """`Mailer.send` takes `self` and `mailer.send` does not, whichever is seen first."""
    mailer = Mailer("smtp")
    add(Mailer.send, mailer, "a")
    add(mailer.send, "a")
    add(Mailer.send, mailer, "a")
    with pytest.raises(TypeError):
        add(mailer.send, mailer, "a")
    with pytest.raises(TypeError):
        add(Mailer.send, "a")


def test_callable_instances_are_checked_through_call_and_classes_through_init() -> None:
    """The class `SyncCallable` and its instances share nothing but a name."""
    add(SyncCallable, "label")
    instance = SyncCallable()
    task = add(instance, 1, 2)
    assert task.is_async is False
    assert task.name == f"{HERE}.SyncCallable"
    add(SyncCallable, "label")
    with pytest.raises(TypeError, match="missing a required argument: 'second'"):
        add(instance, 1)
    with pytest.raises(TypeError, match="too many positional"):
        add(SyncCallable, 1, 2)


def test_instance_with_async_call_is_async() -> None:
    task = add(AsyncCallable(), 1)
    assert task.is_async is True
    with pytest.raises(TypeError, match="missing a required argument: 'value'"):
        add(AsyncCallable())


def test_a_class_is_a_sync_task_even_when_its_instances_have_async_call() -> None:
    """Calling the class constructs an instance; there is nothing to await."""
    assert add(AsyncCallable).is_async is False


def test_callable_without_an_introspectable_signature_accepts_any_call() -> None:
    target = NoSignature()
    shape = describe(target)
    assert shape.checkable is False
    assert shape.signature is None
    task = add(target, 1, 2, key="value")
    assert task.name == f"{HERE}.NoSignature"


def test_builtin_without_a_signature_accepts_any_call() -> None:
    """`max` has no introspectable signature up to Python 3.12 (the class above covers any)."""
    try:
        inspect.signature(max)
    except ValueError:
        introspectable = False
    else:  # pragma: no cover - depends on the Python version
        introspectable = True
    assert describe(max).checkable is introspectable
    task = add(max, 1, 2)
    assert task.is_async is False
    assert task.name == "builtins.max"


def test_unhashable_callable_is_checked_and_cached_by_identity() -> None:
    target = UnhashableCallable()
    shape = describe(target)
    assert describe(target) is shape
    task = add(target, "anything")
    assert task.func is target


def test_kwargs_only_function_accepts_any_keywords_but_no_positionals() -> None:
    def configure(**options: Any) -> None: ...

    add(configure, a=1, b=2)
    add(configure)
    with pytest.raises(TypeError, match="too many positional"):
        add(configure, 1)


# --- names --------------------------------------------------------------------------------------


def test_task_name_is_module_and_qualified_name() -> None:
    def local() -> None: ...

    assert task_name(send_email) == f"{HERE}.send_email"
    assert task_name(local) == (
        f"{HERE}.test_task_name_is_module_and_qualified_name.<locals>.local"
    )
    assert task_name(Mailer("x").send) == f"{HERE}.Mailer.send"
    assert task_name(functools.partial(send_email, "a")) == f"{HERE}.send_email"
    assert task_name(SyncCallable()) == f"{HERE}.SyncCallable"
    assert task_name(len) == "builtins.len"


def test_task_name_falls_back_to_the_qualified_name_without_a_module() -> None:
    def nameless() -> None: ...

    nameless.__module__ = None  # type: ignore[assignment]
    assert task_name(nameless).endswith("<locals>.nameless")
    assert not task_name(nameless).startswith("None")


# --- the shape cache ----------------------------------------------------------------------------


def test_signature_is_inspected_once_per_function(monkeypatch: pytest.MonkeyPatch) -> None:
    def notify(address: str) -> None: ...

    calls: list[object] = []
    real_signature = inspect.signature

    def counting_signature(obj: Any, **kwargs: Any) -> inspect.Signature:
        calls.append(obj)
        return real_signature(obj, **kwargs)

    monkeypatch.setattr(inspect, "signature", counting_signature)
    tasks = BackgroundTasks()
    for index in range(5):
        tasks.add_task(notify, f"user{index}@example.com")
    with pytest.raises(TypeError):
        tasks.add_task(notify)  # type: ignore[call-arg]
    assert calls == [notify]
    assert len(tasks.tasks) == 5


def test_bound_methods_of_different_instances_share_one_cached_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Client:
        def post(self, path: str) -> None: ...

    calls: list[object] = []
    real_signature = inspect.signature

    def counting_signature(obj: Any, **kwargs: Any) -> inspect.Signature:
        calls.append(obj)
        return real_signature(obj, **kwargs)

    monkeypatch.setattr(inspect, "signature", counting_signature)
    for _ in range(3):
        add(Client().post, "/")
    assert len(calls) == 1


def test_the_shape_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_callables, "_MAX_CACHED", 4)
    monkeypatch.setattr(_callables, "_by_identity", {})
    made: list[Callable[[int], None]] = []
    for _ in range(10):

        def per_request_closure(value: int) -> None: ...

        made.append(per_request_closure)
        add(per_request_closure, 1)
        assert len(_callables._by_identity) <= 4
    assert id(made[-1]) in _callables._by_identity
    # A function evicted from the cache is still checked correctly.
    with pytest.raises(TypeError):
        add(made[0])


def test_check_call_returns_the_shape_it_checked_against() -> None:
    shape = check_call(send_email_async, ("a",), {})
    assert shape is describe(send_email_async)
    assert shape.is_async is True
    assert shape.name == f"{HERE}.send_email_async"


# --- the shape cache: one entry per callable, none kept alive -----------------------------------


class logged:
    """A class-based decorator: each decorated function is an instance of this one class."""

    def __init__(self, func: Callable[..., Any]) -> None:
        functools.update_wrapper(self, func)
        self.func = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)


@logged
def notify_one(address: str) -> None: ...


@logged
def notify_many(addresses: list[str], subject: str, body: str) -> None: ...


def test_functions_wrapped_by_one_class_based_decorator_keep_their_own_signature_and_name() -> None:
    first = add(notify_one, "a@example.com")
    second = add(notify_many, ["a@example.com"], "hello", "body")
    assert first.name == f"{HERE}.notify_one"
    assert second.name == f"{HERE}.notify_many"
    with pytest.raises(TypeError, match="notify_many"):
        add(notify_many, "a@example.com")  # the signature of notify_one would accept it
    with pytest.raises(TypeError, match="notify_one"):
        add(notify_one, ["a"], "hello", "body")


def test_per_request_closures_and_what_they_capture_are_not_kept_alive() -> None:
    class Payload:
        """Stands for the request's data a task closes over (weakly referenceable)."""

        def __init__(self) -> None:
            self.data = bytearray(100_000)

    payloads: list[weakref.ref[Payload]] = []
    instances: list[weakref.ref[object]] = []
    for _ in range(200):
        payload = Payload()
        payloads.append(weakref.ref(payload))

        def task(suffix: str, payload: Payload = payload) -> None:
            payload.data.extend(suffix.encode())

        class PerRequest:
            def __call__(self, value: int) -> None: ...

        instance = PerRequest()
        instances.append(weakref.ref(instance))
        tasks = BackgroundTasks()
        tasks.add_task(task, "!")
        tasks.add_task(instance, 1)
        tasks.add_task(functools.partial(task, "?"))
        del tasks, task, payload, instance
    gc.collect()
    assert [ref for ref in payloads if ref() is not None] == []
    assert [ref for ref in instances if ref() is not None] == []


def test_a_cached_shape_is_dropped_when_its_function_goes() -> None:
    def per_request(value: int) -> None: ...

    add(per_request, 1)
    key = id(per_request)
    assert key in _callables._by_identity
    del per_request
    gc.collect()
    assert key not in _callables._by_identity


def test_bound_builtin_methods_are_checked_without_keeping_their_object() -> None:
    class Items(list[int]):
        pass

    items = Items()
    reference = weakref.ref(items)
    task = add(items.append, 1)
    assert task.name.endswith(".append")
    del items, task
    gc.collect()
    assert reference() is None


def test_module_level_builtins_are_described_once() -> None:
    assert describe(print) is describe(print)


def test_a_callable_that_cannot_be_weakly_referenced_is_checked_each_time() -> None:
    class Slotted:
        __slots__ = ()

        def __call__(self, value: int) -> None: ...

    target = Slotted()
    assert describe(target) is not describe(target)
    with pytest.raises(TypeError, match="Slotted"):
        add(target)
    assert add(target, 1).func is target
