"""§5 Bad input to `add_task`, tried systematically (Hypothesis).

For any callable-ish object and any arguments, `add_task` either raises a clear `TypeError`
there (naming the function, saying what to write), or the task later runs exactly once, with
those arguments, with no error: never a failure after the response that `add_task` could have
seen. The oracle is `inspect.signature(func).bind(*args, **kwargs)`.

The same property runs inline (a collector run after the response, as `inject` and the FastAPI
drop-in run it: the drop-in's collector is this same class) and detached (through
`BackgroundTasksMiddleware` and its supervisor), on asyncio and trio. A backend or a task policy
is one more entry in `RUNNERS`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Scope

from afterward import BackgroundTasks, BackgroundTasksMiddleware, current_tasks

EXAMPLES = 300
CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
_lock = threading.Lock()


def note(label: str, *args: Any, **kwargs: Any) -> None:
    with _lock:
        CALLS.append((label, args, kwargs))


# Callables of every shape a user may pass.


def f0() -> None:
    note("f0")


def f1(a: Any) -> None:
    note("f1", a)


def f2(a: Any, b: Any = 1) -> None:
    note("f2", a, b=b)


def fvar(*args: Any, **kwargs: Any) -> None:
    note("fvar", *args, **kwargs)


def kwonly(a: Any, *, k: Any) -> None:
    note("kwonly", a, k=k)


def posonly(a: Any, /, b: Any = 2) -> None:
    note("posonly", a, b=b)


async def af1(a: Any) -> None:
    await anyio.lowlevel.checkpoint()
    note("af1", a)


async def af2(a: Any, b: Any = 1) -> None:
    note("af2", a, b=b)


class Cls:
    def __init__(self, a: Any) -> None:
        note("Cls", a)


class Cls0:
    def __init__(self) -> None:
        note("Cls0")


class SyncCallable:
    def __call__(self, a: Any, b: Any = 1) -> None:
        note("SyncCallable", a, b=b)


class AsyncCallable:
    async def __call__(self, a: Any) -> None:
        note("AsyncCallable", a)


class AsyncCallClass:
    """A class with `async __call__`, passed as the class: calling it constructs an instance."""

    def __init__(self, a: Any) -> None:
        note("AsyncCallClass", a)

    async def __call__(self) -> None:  # pragma: no cover - never called by afterward
        raise AssertionError("the class is the task, not its instances")


class Obj:
    def method(self, a: Any) -> None:
        note("method", a)

    async def amethod(self, a: Any, b: Any = 1) -> None:
        note("amethod", a, b=b)

    @staticmethod
    def static(a: Any) -> None:
        note("static", a)

    @classmethod
    def klass(cls, a: Any) -> None:
        note("klass", a)


def logged(func: Callable[..., Any]) -> Callable[..., Any]:
    """A typical decorator: `*args, **kwargs` and functools.wraps."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await func(*args, **kwargs)

        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


SINK: list[Any] = []

CALLABLES: dict[str, Callable[[], Any]] = {
    "f0": lambda: f0,
    "f1": lambda: f1,
    "f2": lambda: f2,
    "fvar": lambda: fvar,
    "kwonly": lambda: kwonly,
    "posonly": lambda: posonly,
    "af1": lambda: af1,
    "af2": lambda: af2,
    "lambda": lambda: lambda a, b=0: note("lambda", a, b=b),
    "class": lambda: Cls,
    "class0": lambda: Cls0,
    "callable instance": SyncCallable,
    "async callable instance": AsyncCallable,
    "class with async __call__": lambda: AsyncCallClass,
    "bound method": lambda: Obj().method,
    "async bound method": lambda: Obj().amethod,
    "staticmethod": lambda: Obj.static,
    "classmethod": lambda: Obj.klass,
    "decorated": lambda: logged(f2),
    "decorated async": lambda: logged(af1),
    "partial": lambda: functools.partial(f2, 1),
    "partial keyword": lambda: functools.partial(kwonly, k=1),
    "partial async": lambda: functools.partial(af2, b=3),
    "partial of partial": lambda: functools.partial(functools.partial(fvar, 1), 2),
    "bound builtin": lambda: SINK.append,
    # Not callables, or not what add_task takes.
    "coroutine object": lambda: af1(1),
    "int": lambda: 42,
    "str": lambda: "send_email",
    "None": lambda: None,
    "list": lambda: [f1],
    "dict": lambda: {"func": f1},
    "object": object,
}

values = st.one_of(st.integers(), st.text(max_size=5), st.none())
arguments = st.lists(values, max_size=3).map(tuple)
keywords = st.dictionaries(st.sampled_from(["a", "b", "k", "x"]), values, max_size=3)


def binds(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """The oracle: would `func(*args, **kwargs)` bind (so the call can only fail by its body)?"""
    if not callable(func) or inspect.iscoroutine(func):
        return False
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # pragma: no cover - every callable above has one
        return True
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        return False
    return True


class ErrorLog(logging.Handler):
    """The afterward logger's WARNING and ERROR records."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def error_log() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    logger = logging.getLogger("afterward")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


Build = Callable[[BackgroundTasks], None]


class Inline:
    """Run a collector the way `inject` and the FastAPI drop-in do: `await collector()`."""

    async def submit(self, build: Build) -> TypeError | None:
        tasks = BackgroundTasks()
        try:
            build(tasks)
        except TypeError as exc:
            assert tasks.tasks == []
            return exc
        await tasks()
        return None


class Detached:
    """Run a request's collector through BackgroundTasksMiddleware and its supervisor."""

    def __init__(self) -> None:
        self.build: Build | None = None
        self.refused: TypeError | None = None
        self.done: anyio.Event | None = None

        async def endpoint(request: Request) -> Response:
            tasks = current_tasks()
            assert self.build is not None
            try:
                self.build(tasks)
            except TypeError as exc:
                self.refused = exc
                assert tasks.tasks == []
                return PlainTextResponse("refused")
            tasks.add_task(self.finished)
            return PlainTextResponse("queued")

        self.app = BackgroundTasksMiddleware(Starlette(routes=[Route("/", endpoint)]))

    async def finished(self) -> None:
        assert self.done is not None
        self.done.set()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Detached]:
        send_stream, receive_stream = anyio.create_memory_object_stream[Message](10)
        answers, answered = anyio.create_memory_object_stream[Message](10)
        async with (
            send_stream,
            receive_stream,
            answers,
            answered,
            anyio.create_task_group() as group,
        ):
            scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
            group.start_soon(
                self.app,
                scope,
                receive_stream.receive,
                answers.send,
            )
            await send_stream.send({"type": "lifespan.startup"})
            assert (await answered.receive())["type"] == "lifespan.startup.complete"
            yield self
            await send_stream.send({"type": "lifespan.shutdown"})
            assert (await answered.receive())["type"] == "lifespan.shutdown.complete"

    async def submit(self, build: Build) -> TypeError | None:
        self.build, self.refused, self.done = build, None, anyio.Event()
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"",
            "root_path": "", "headers": [], "client": ("127.0.0.1", 1), "server": ("t", 80),
        }  # fmt: skip
        await self.app(scope, receive, send)
        assert sent[0]["status"] == 200
        if self.refused is None:
            with anyio.fail_after(5):
                await self.done.wait()
        return self.refused


RUNNERS = [
    pytest.param("inline", "asyncio", id="inline-asyncio"),
    pytest.param("inline", "trio", id="inline-trio"),
    pytest.param("detached", "asyncio", id="detached-asyncio"),
    pytest.param("detached", "trio", id="detached-trio"),
]


@contextlib.contextmanager
def runner(kind: str, backend: str) -> Iterator[tuple[anyio.from_thread.BlockingPortal, Any]]:
    with anyio.from_thread.start_blocking_portal(backend) as portal:
        if kind == "inline":
            yield portal, Inline()
        else:
            with portal.wrap_async_context_manager(Detached().serving()) as detached:
                yield portal, detached


@pytest.mark.parametrize(("kind", "backend"), RUNNERS)
def test_add_task_refuses_at_once_or_the_task_runs_exactly_once(kind: str, backend: str) -> None:
    with runner(kind, backend) as (portal, run), error_log() as errors:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        )
        @given(label=st.sampled_from(sorted(CALLABLES)), args=arguments, kwargs=keywords)
        def check(label: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            func = CALLABLES[label]()
            ok = binds(func, args, kwargs)
            CALLS.clear()
            SINK.clear()
            errors.records.clear()

            def build(tasks: BackgroundTasks) -> None:
                tasks.add_task(func, *args, **kwargs)

            refused = portal.call(run.submit, build)
            if inspect.iscoroutine(func):
                assert func.cr_frame is None, "the coroutine object was not closed"
            if not ok:
                assert refused is not None, f"{label}{args}{kwargs} accepted; it cannot bind"
                message = str(refused)
                assert "add_task" in message, message
                if callable(func) and not inspect.iscoroutine(func):
                    target = func
                    while isinstance(target, functools.partial):
                        target = target.func  # a partial is named by its function
                    name = getattr(target, "__name__", None) or type(target).__name__
                    assert name in message, message
                return
            assert refused is None, f"{label}{args}{kwargs} refused: {refused}"
            assert errors.records == [], [r.getMessage() for r in errors.records]
            ran = len(SINK) if label == "bound builtin" else len(CALLS)
            assert ran == 1, f"{label} ran {ran} times"

        check()


def send_welcome(email: str, token: str) -> None:  # pragma: no cover - never called
    raise AssertionError("refused at add_task")


def test_a_refused_add_task_names_the_function_not_the_values_of_its_arguments() -> None:
    tasks = BackgroundTasks()
    with pytest.raises(TypeError) as refused:
        tasks.add_task(send_welcome, "alice@example.com")  # type: ignore[call-arg]
    message = str(refused.value)
    assert "send_welcome" in message  # still says what is wrong
    assert "token" in message
    assert "alice@example.com" not in message, message
