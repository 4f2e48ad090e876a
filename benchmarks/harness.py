"""Drive ASGI apps in-process and measure requests per second, checking every task ran.

No network and no server: each request is a fresh ASGI scope and a pair of `receive`/`send`
callables, and the app is called as a server would, `await app(scope, receive, send)`, in a loop
of a fixed number of requests (a *round*). Rounds of the variants of a scenario are interleaved
(A, B, C, then B, C, A, ...: the starting variant rotates), so drift in the machine's speed
touches every variant alike. A variant's requests/s is the median of its rounds; a ratio between
two variants is the median of their per-round ratios (see `results.py`). Many short rounds make
both stable.

The garbage collector is left alone, or controlled (`control_gc`): what is alive after the warm-up
is frozen out of its sight and a collection runs before every round, so that one variant's garbage
is not collected on another's time. `benchmarks/README.md` says what each way measures.

Nothing is taken on trust. After every request the harness checks the status and the exact body,
that the tasks had not run yet when the final body message was sent (they run after the response),
and that all of them had run when the ASGI call returned (inline variants run them inside the
call). After every round it checks that the tasks recorded exactly the expected messages, in
order, once per request. Any deviation raises `BenchmarkError`.

Detached variants (`Scenario.detached`) are apps under `afterward.BackgroundTasksMiddleware`: their
tasks run after the ASGI call has returned, in the middleware's supervisor, which runs only while
the app's lifespan does. `serving` runs the lifespan of each for the whole measurement, as a server
would; each of their rounds ends with `await supervisor.wait_idle()` inside the timed region, so
the round's time includes running its tasks, and every task is counted before the next round. For
them the per-request check is that none of the request's tasks had run when its body was sent;
the count after the round is the same, but as a multiset: the tasks of different requests may run
interleaved (in worker threads, or as concurrent async runs).
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream
from starlette.types import ASGIApp, Message, Scope

from afterward import BackgroundTasksMiddleware

from .results import ScenarioResult, Target

if TYPE_CHECKING:
    from afterward._supervisor import Supervisor

__all__ = [
    "BenchmarkError",
    "HttpRequest",
    "Scenario",
    "make_scope",
    "measure_round",
    "run_benchmark",
    "run_scenario",
    "serving",
]


class BenchmarkError(Exception):
    """An app did not answer as expected, or its tasks did not all run: the numbers are void."""


@dataclass(frozen=True)
class HttpRequest:
    """The request every variant of a scenario receives."""

    method: str
    path: str
    query_string: bytes = b""


@dataclass(frozen=True)
class Scenario:
    """One piece of work written several ways (`apps`: variant name -> ASGI app).

    Attributes:
        name: What the scenario does, e.g. "1 async task".
        apps: The variants, in display order.
        request: The request sent to every variant.
        expected_body: The exact response body every variant must send (status 200).
        messages: What the tasks of one request append to `executed`, in order.
        executed: The list every task of this scenario appends to.
        requests: Requests per round.
        targets: The targets checked on this scenario's results.
        detached: The variants whose app is a `BackgroundTasksMiddleware`, measured with their
            lifespan running and their tasks run detached (see the module's docstring).
    """

    name: str
    apps: Mapping[str, ASGIApp]
    request: HttpRequest
    expected_body: bytes
    messages: tuple[str, ...]
    executed: list[str]
    requests: int
    targets: tuple[Target, ...] = ()
    detached: frozenset[str] = field(default_factory=frozenset)

    def middleware(self, variant: str) -> BackgroundTasksMiddleware:
        """Return the middleware of the detached `variant`.

        Raises:
            TypeError: the variant's app is not a `BackgroundTasksMiddleware`.
        """
        app = self.apps[variant]
        if not isinstance(app, BackgroundTasksMiddleware):
            raise TypeError(
                f"{self.name} / {variant} is listed as detached, so its app must be an "
                f"afterward.BackgroundTasksMiddleware, got {app!r}; wrap it, or leave it out of "
                f"`detached`."
            )
        return app


def make_scope(request: HttpRequest) -> Scope:
    """Return the scope a server such as uvicorn would build for `request` (without `state`)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "root_path": "",
        "query_string": request.query_string,
        "headers": [
            (b"host", b"testserver"),
            (b"user-agent", b"afterward-benchmark"),
            (b"content-length", b"0"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


_REQUEST_MESSAGE: Message = {"type": "http.request", "body": b"", "more_body": False}
_DISCONNECT: Message = {"type": "http.disconnect"}


class _Exchange:
    """The server's side of one request: feeds the (empty) body, records the response."""

    __slots__ = ("body", "executed", "received", "status", "tasks_done_at_body_end")

    def __init__(self, executed: list[str]) -> None:
        self.executed = executed
        self.received = False
        self.status = 0
        self.body = b""
        self.tasks_done_at_body_end = -1

    async def receive(self) -> Message:
        if self.received:
            return _DISCONNECT  # the client has nothing more to say
        self.received = True
        return _REQUEST_MESSAGE

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
        elif kind == "http.response.body":
            self.body += message.get("body", b"")
            if not message.get("more_body", False):
                self.tasks_done_at_body_end = len(self.executed)


async def measure_round(
    scenario: Scenario, variant: str, requests: int, *, collect_garbage: bool = True
) -> float:
    """Send `requests` requests to one variant; return requests/s after checking every task ran.

    A detached variant must be served (see `serving`): the round then ends, inside the timed
    region, once its supervisor is idle, and its tasks are counted after that.

    Args:
        scenario: The scenario.
        variant: Which of its apps to call.
        requests: How many requests to send.
        collect_garbage: Run a full garbage collection first, so that the previous round's
            garbage is not collected (and paid for) during this one.

    Raises:
        BenchmarkError: a response or a task count was wrong, or a detached variant's lifespan
            is not running (its tasks would run inline).
    """
    app = scenario.apps[variant]
    detached = variant in scenario.detached
    supervisor = _running_supervisor(scenario, variant) if detached else None
    template = make_scope(scenario.request)
    executed = scenario.executed
    expected_body = scenario.expected_body
    per_request = len(scenario.messages)
    executed.clear()
    if collect_garbage:
        gc.collect()
    done = 0
    start = perf_counter()
    for _ in range(requests):
        exchange = _Exchange(executed)
        # A fresh scope per request: frameworks store their routing results in it.
        await app({**template, "state": {}}, exchange.receive, exchange.send)
        if (
            exchange.status != 200
            or exchange.body != expected_body
            or exchange.tasks_done_at_body_end > done
            # Inline, every earlier task and all of this request's have run by now; detached,
            # they may still be waiting or running.
            or (supervisor is None and exchange.tasks_done_at_body_end != done)
            or (supervisor is None and len(executed) != done + per_request)
        ):
            raise BenchmarkError(_describe_failure(scenario, variant, exchange, done))
        done += per_request
    if supervisor is not None:
        await supervisor.wait_idle()  # timed: the round includes running its tasks
    elapsed = perf_counter() - start
    expected = list(scenario.messages) * requests
    if executed != expected if supervisor is None else Counter(executed) != Counter(expected):
        raise BenchmarkError(
            f"{scenario.name} / {variant}: the tasks of {requests} requests recorded "
            f"{len(executed)} messages, not {requests} x {list(scenario.messages)}"
            + (" (in any order across requests)" if supervisor is not None else " in order")
            + "."
        )
    return requests / elapsed


def _running_supervisor(scenario: Scenario, variant: str) -> Supervisor:
    supervisor = scenario.middleware(variant).supervisor
    if supervisor is None or not supervisor.running:
        raise BenchmarkError(
            f"{scenario.name} / {variant} is detached but its lifespan is not running, so the "
            f"middleware would run its tasks inline; measure it inside `serving(scenario)`."
        )
    return supervisor


def _describe_failure(scenario: Scenario, variant: str, exchange: _Exchange, done: int) -> str:
    where = f"{scenario.name} / {variant}, request {done // max(len(scenario.messages), 1) + 1}"
    if exchange.status != 200 or exchange.body != scenario.expected_body:
        return (
            f"{where}: answered {exchange.status} {exchange.body!r}, expected 200 "
            f"{scenario.expected_body!r}."
        )
    if exchange.tasks_done_at_body_end > done or (
        variant not in scenario.detached and exchange.tasks_done_at_body_end != done
    ):
        ran = exchange.tasks_done_at_body_end - done
        return f"{where}: {ran} task(s) ran before the response body was sent."
    ran = len(scenario.executed) - done
    return (
        f"{where}: {ran} of {len(scenario.messages)} task(s) had run when the ASGI call "
        f"returned; every task must have run by then."
    )


@asynccontextmanager
async def serving(scenario: Scenario) -> AsyncIterator[None]:
    """Run the lifespan of every detached variant of `scenario` inside the block.

    As a server does: `lifespan.startup` before the block (the middleware starts its supervisor),
    `lifespan.shutdown` after it (the middleware drains the supervisor, then the app shuts down).

    Raises:
        BenchmarkError: an app did not complete its startup or shutdown.
        TypeError: a detached variant is not under `BackgroundTasksMiddleware`.
    """
    variants = [variant for variant in scenario.apps if variant in scenario.detached]
    for variant in variants:
        scenario.middleware(variant)  # refuse a wrong app before anything starts
    failure: Exception | None = None
    async with anyio.create_task_group() as group:
        try:
            async with AsyncExitStack() as stack:
                for variant in variants:
                    await stack.enter_async_context(
                        _lifespan(group, scenario.apps[variant], f"{scenario.name} / {variant}")
                    )
                yield
        except Exception as exc:
            # Raised after the task group, not through it: callers catch a `BenchmarkError`,
            # not an exception group around one.
            failure = exc
    if failure is not None:
        raise failure


@asynccontextmanager
async def _lifespan(group: TaskGroup, app: ASGIApp, where: str) -> AsyncIterator[None]:
    to_app, app_receives = anyio.create_memory_object_stream[Message](1)
    app_sends, from_app = anyio.create_memory_object_stream[Message](1)
    scope: Scope = {
        "type": "lifespan",
        "asgi": {"version": "3.0", "spec_version": "2.0"},
        "state": {},
    }

    async def serve() -> None:
        async with app_receives, app_sends:  # the app returning ends the stream: no hang
            await app(scope, app_receives.receive, app_sends.send)

    group.start_soon(serve)
    async with to_app, from_app:
        await to_app.send({"type": "lifespan.startup"})
        await _expect(from_app, "lifespan.startup.complete", where)
        try:
            yield
        finally:
            await to_app.send({"type": "lifespan.shutdown"})
            await _expect(from_app, "lifespan.shutdown.complete", where)


async def _expect(messages: MemoryObjectReceiveStream[Message], kind: str, where: str) -> None:
    # A guard, not a wait: startup is immediate, and shutdown drains a supervisor that is
    # already idle after every round (well within the middleware's drain_timeout).
    with anyio.fail_after(60):
        try:
            message = await messages.receive()
        except anyio.EndOfStream:
            message = {"type": "the app returning without a word"}
    if message["type"] != kind:
        raise BenchmarkError(f"{where}: expected {kind}, got {message!r}.")


async def run_scenario(
    scenario: Scenario,
    *,
    rounds: int,
    scale: float = 1.0,
    warmup: bool = True,
    control_gc: bool = True,
) -> ScenarioResult:
    """Measure every variant of `scenario` over `rounds` interleaved rounds.

    Args:
        scenario: What to measure.
        rounds: Timed rounds per variant.
        scale: Multiplies `scenario.requests` (e.g. 0.25 for a quick run).
        warmup: Run one untimed (but checked) round of each variant first, so caches, imports
            and worker threads are in place before timing starts.
        control_gc: Freeze what is alive after the warm-up out of the garbage collector's way
            (`gc.freeze`) and collect garbage before each round (see `measure_round`). False:
            the collector runs when it would in a server, on whichever variant's time.

    The lifespans of the detached variants run from before the warm-up to after the last round
    (see `serving`).

    Raises:
        BenchmarkError: a response or a task count was wrong.
    """
    requests = max(1, round(scenario.requests * scale))
    variants = list(scenario.apps)
    rates: dict[str, list[float]] = {variant: [] for variant in variants}
    async with serving(scenario):
        await _measure_rounds(scenario, variants, rates, requests, rounds, warmup, control_gc)
    return ScenarioResult(scenario.name, requests, rates, scenario.targets)


async def _measure_rounds(
    scenario: Scenario,
    variants: list[str],
    rates: dict[str, list[float]],
    requests: int,
    rounds: int,
    warmup: bool,
    control_gc: bool,
) -> None:
    if warmup:
        for variant in variants:
            await measure_round(scenario, variant, requests, collect_garbage=control_gc)
    if control_gc:
        # Everything alive now (frameworks, apps, caches) is moved out of the collector's sight:
        # the collection before each round then takes microseconds instead of ~25 ms, and the
        # collections that happen during a round only look at what the round itself allocated.
        gc.collect()
        gc.freeze()
    try:
        for index in range(rounds):
            # Rotating who goes first keeps any "runs after variant X" effect off one variant.
            shift = index % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                rate = await measure_round(scenario, variant, requests, collect_garbage=control_gc)
                rates[variant].append(rate)
    finally:
        if control_gc:
            gc.unfreeze()
        scenario.executed.clear()


def run_benchmark(
    scenarios: Sequence[Scenario],
    *,
    rounds: int,
    scale: float = 1.0,
    control_gc: bool = True,
    backend: str = "asyncio",
) -> list[ScenarioResult]:
    """Run `run_scenario` for each scenario in one event loop of `backend`; return the results."""

    async def main() -> list[ScenarioResult]:
        return [
            await run_scenario(s, rounds=rounds, scale=scale, control_gc=control_gc)
            for s in scenarios
        ]

    return anyio.run(main, backend=backend)
