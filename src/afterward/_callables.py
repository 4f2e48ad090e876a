"""What afterward knows about a task function: its name, whether it is async, and its call shape.

`add_task` runs on the request's hot path, so everything here is computed once per function and
cached. Checking a call is then a handful of tuple and set operations instead of
`inspect.Signature.bind` on every call; `bind` is only used to word the error once a call is
already known to be wrong.
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
import weakref
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "TaskShape",
    "TaskWrapper",
    "check_call",
    "describe",
    "is_async_callable",
    "task_name",
]

_MAX_CACHED = 4096
_P = inspect.Parameter

# `max_positional_call` values that are not a parameter count (see `TaskShape.binds`).
NO_POSITIONAL_CALL = -1
"""No call with positional arguments only binds: a keyword-only parameter is required."""
ANY_POSITIONAL_CALL = sys.maxsize
"""Any number of positional arguments binds: `*args`, or no signature to check against."""


class TaskShape:
    """The parts of a callable's signature that decide whether a call binds."""

    __slots__ = (
        "_keywords",
        "_max_positional",
        "_positional",
        "_positional_only",
        "_required_keyword_only",
        "_required_positional",
        "_var_keyword",
        "_var_positional",
        "checkable",
        "is_async",
        "max_positional_call",
        "min_positional",
        "name",
        "policy",
        "signature",
        "target",
    )

    def __init__(self, name: str, is_async: bool, signature: inspect.Signature | None) -> None:
        self.name = name
        self.is_async = is_async
        self.signature = signature
        self.checkable = signature is not None
        # Set for an `afterward.task`: the function the entry runs, and the policy it carries.
        self.target: Any = None
        self.policy: Any = None
        positional: list[str] = []
        required_positional: list[str] = []
        positional_only: set[str] = set()
        keywords: set[str] = set()
        required_keyword_only: list[str] = []
        self._var_positional = self._var_keyword = False
        for parameter in signature.parameters.values() if signature is not None else ():
            kind = parameter.kind
            required = parameter.default is _P.empty
            if kind is _P.VAR_POSITIONAL:
                self._var_positional = True
            elif kind is _P.VAR_KEYWORD:
                self._var_keyword = True
            elif kind is _P.KEYWORD_ONLY:
                keywords.add(parameter.name)
                if required:
                    required_keyword_only.append(parameter.name)
            else:
                positional.append(parameter.name)
                if required:
                    required_positional.append(parameter.name)
                if kind is _P.POSITIONAL_ONLY:
                    positional_only.add(parameter.name)
                else:
                    keywords.add(parameter.name)
        self._positional = {name: index for index, name in enumerate(positional)}
        self._max_positional = len(positional)
        self._required_positional = tuple(required_positional)
        self._positional_only = frozenset(positional_only)
        self._keywords = frozenset(keywords)
        self._required_keyword_only = tuple(required_keyword_only)
        # For the common call with positional arguments only, a range check decides.
        self.min_positional = len(self._required_positional)
        self.max_positional_call = self._max_positional
        if self._var_positional or not self.checkable:
            self.max_positional_call = ANY_POSITIONAL_CALL
        if self._required_keyword_only:
            self.max_positional_call = NO_POSITIONAL_CALL

    def with_policy(self, target: Any, policy: Any) -> TaskShape:
        """Return a copy of this shape for `target` run with `policy` (named by the policy)."""
        shape = object.__new__(TaskShape)
        for slot in TaskShape.__slots__:
            setattr(shape, slot, getattr(self, slot))
        shape.name = policy.name
        shape.target = target
        shape.policy = policy
        return shape

    def binds(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
        """Return whether `func(*args, **kwargs)` would bind to this signature."""
        if not kwargs:
            return self.min_positional <= len(args) <= self.max_positional_call
        if not self.checkable:
            return True
        count = len(args)
        if count > self._max_positional and not self._var_positional:
            return False
        for key in kwargs:
            index = self._positional.get(key)
            if index is not None and index < count and key not in self._positional_only:
                return False  # the same argument given by position and by keyword
            if key not in self._keywords and not self._var_keyword:
                return False  # unknown, or positional-only passed by keyword
        for key in self._required_positional[count:]:
            if key not in kwargs or key in self._positional_only:
                return False
        return all(key in kwargs for key in self._required_keyword_only)


class TaskWrapper:
    """A callable that knows its own shape: `afterward.Task`, which carries a policy.

    The marker `check_call` recognises, here so that this module need not import `_policy`;
    `afterward.Task` is its one subclass and defines `task_shape()`, which returns the shape of
    the call it stands for.
    """

    __slots__ = ()

    task_shape: Callable[[], TaskShape]


# The cache holds shapes, never the callables: a function or callable instance made per request
# (a closure over the request's data, say) must not be kept alive by afterward. Entries are keyed
# by the object's identity and hold a weak reference to it, which tells a live key from an id
# reused after its object died, and whose callback drops the entry when the object goes.
# Measured on add_task of a plain function (timeit, CPython 3.11): 40 ns for the lookup keyed by
# the function itself (which kept it alive), 105 ns for this one; the 65 ns buy bounded memory.
_Entry = tuple["weakref.ref[Any]", TaskShape]
_by_identity: dict[int, _Entry] = {}
# Bound methods are made anew at each attribute access: theirs are keyed by their function.
_by_method_function: dict[int, _Entry] = {}
# Builtin functions cannot be weakly referenced; the module-level ones live as long as afterward.
_builtins: dict[object, TaskShape] = {}


def check_call(func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> TaskShape:
    """Validate a task call now, in the request, and return the function's shape.

    Raises:
        TypeError: `func` is not callable, is a coroutine object, or the arguments do not bind.
    """
    # The hot path, written out: a plain function or class seen before is one lookup.
    entry = _by_identity.get(id(func))
    if entry is not None and entry[0]() is func:
        shape = entry[1]
    elif isinstance(func, functools.partial):
        # A partial is checked as the call it will make: its own arguments first.
        shape = check_call(func.func, func.args + args, {**func.keywords, **kwargs})
        if shape.policy is not None:
            # A partial of an `afterward.task`: the entry runs the plain function with the
            # policy, and the partial's own arguments must come along with it.
            target = functools.partial(shape.target, *func.args, **func.keywords)
            shape = shape.with_policy(target, shape.policy)
        return shape
    else:
        shape = describe(func)
    # The common call, positional arguments only, is decided by a range check. Written out here
    # rather than left to `binds`: 70 ns of an add_task of 600 ns (timeit, CPython 3.11).
    if not kwargs and shape.min_positional <= len(args) <= shape.max_positional_call:
        return shape
    if not shape.binds(args, kwargs):
        raise TypeError(_binding_message(func, shape, args, kwargs))
    return shape


def describe(func: Any) -> TaskShape:
    """Return the cached shape of a (non-partial) callable, building it on first use."""
    # A bound method's signature lacks the `self` its function has: it has a table of its own.
    # A callable instance is its own key, not its class: each function wrapped by a class-based
    # decorator is an instance of the same class with its own `__wrapped__` signature and name.
    if isinstance(func, types.MethodType):
        table, key = _by_method_function, func.__func__
    else:
        table, key = _by_identity, func
    entry = table.get(id(key))
    if entry is not None and entry[0]() is key:
        return entry[1]
    shape = _builtins.get(func) if _is_module_builtin(func) else None
    if shape is not None:
        return shape
    shape = func.task_shape() if isinstance(func, TaskWrapper) else _build(func)
    _remember(table, key, func, shape)
    return shape


def _remember(table: dict[int, _Entry], key: object, func: object, shape: TaskShape) -> None:
    if len(table) >= _MAX_CACHED:
        table.clear()  # a bound on the number of entries; the objects are not held anyway
    try:
        reference = weakref.ref(key, functools.partial(_forget, table, id(key)))
    except TypeError:  # not weakly referenceable (builtins, some instances with __slots__)
        if _is_module_builtin(func):
            _builtins[func] = shape
        return  # anything else is described again on its next use: correct, only slower
    table[id(key)] = reference, shape


def _forget(table: dict[int, _Entry], key: int, reference: weakref.ref[Any]) -> None:
    entry = table.get(key)
    if entry is not None and entry[0] is reference:
        del table[key]


def _is_module_builtin(func: object) -> bool:
    # `len`, `print`: their `__self__` is their module. A bound builtin method (`items.append`)
    # has the object it is bound to instead, which may be made per request.
    return isinstance(func, types.BuiltinFunctionType) and isinstance(
        func.__self__, (types.ModuleType, type(None))
    )


def _build(func: Any) -> TaskShape:
    if inspect.iscoroutine(func):
        name = getattr(func, "__qualname__", "func")
        func.close()  # it will never be awaited; closing it avoids a RuntimeWarning
        raise TypeError(
            f"add_task() got a coroutine object, not a function: {name}(...) was called "
            f"instead of being passed. Pass the function and its arguments separately: "
            f"add_task({name}, *args, **kwargs), not add_task({name}(*args, **kwargs))."
        )
    if not callable(func):
        raise TypeError(
            f"add_task() expects a callable as its first argument, got {func!r} "
            f"({type(func).__name__}). Pass the function itself: add_task(func, *args, **kwargs)."
        )
    try:
        signature: inspect.Signature | None = inspect.signature(func)
    except (TypeError, ValueError):
        signature = None  # some builtins have no introspectable signature; accept any call
    return TaskShape(task_name(func), is_async_callable(func), signature)


def _binding_message(
    func: Any, shape: TaskShape, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> str:
    if shape.signature is None:  # only checkable shapes refuse a call
        raise AssertionError(f"{shape.name} has no signature, so no call can be refused")
    try:
        shape.signature.bind(*args, **kwargs)
        reason = "they do not bind"
    except TypeError as exc:
        reason = str(exc)
    # The types of the arguments, never their values: this message may reach a server's log,
    # and a task's arguments are often personal data (an e-mail address, a token).
    given = ", ".join(
        [*(_type_name(v) for v in args), *(f"{k}={_type_name(v)}" for k, v in kwargs.items())]
    )
    # Names and defaults are what a caller needs; annotations would be quoted strings under
    # `from __future__ import annotations` and only add noise.
    expected = shape.signature.replace(
        parameters=[p.replace(annotation=_P.empty) for p in shape.signature.parameters.values()],
        return_annotation=inspect.Signature.empty,
    )
    return (
        f"The arguments given to add_task() do not match {shape.name}{expected}: "
        f"{reason}. The task was called with arguments of these types: {shape.name}({given}); "
        f"pass the arguments {shape.name.rpartition('.')[2]} expects, as "
        f"add_task(func, *args, **kwargs)."
    )


def _type_name(value: object) -> str:
    return type(value).__qualname__


def is_async_callable(func: Any) -> bool:
    """Return whether afterward awaits `func` on the event loop (else: a worker thread)."""
    # Same rule as Starlette's `is_async_callable`, so tasks are classified identically after a
    # migration: look at the object and its `__call__` (`check_call` has unwrapped partials).
    if inspect.isclass(func):
        # Calling a class constructs an instance, even when the class defines `async __call__`
        # (where Starlette's rule says "async" and would then fail to await the instance).
        return False
    return inspect.iscoroutinefunction(func) or (
        callable(func) and inspect.iscoroutinefunction(func.__call__)
    )


def task_name(func: Any) -> str:
    """Return the name afterward uses for a task in logs: `module.qualname` of the function."""
    while isinstance(func, functools.partial):
        func = func.func
    if isinstance(func, types.MethodType):
        func = func.__func__
    if not hasattr(func, "__qualname__"):
        func = type(func)
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None) or repr(func)
    return f"{module}.{qualname}" if module else qualname
