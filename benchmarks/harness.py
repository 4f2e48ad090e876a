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
and that all of them had run when the ASGI call returned (they run inline, inside the call, in all
the variants compared). After every round it checks that the tasks recorded exactly the expected
messages, in order, once per request. Any deviation raises `BenchmarkError`.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter

import anyio
from starlette.types import ASGIApp, Message, Scope

from .results import ScenarioResult, Target

__all__ = [
    "BenchmarkError",
    "HttpRequest",
    "Scenario",
    "make_scope",
    "measure_round",
    "run_benchmark",
    "run_scenario",
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
    """

    name: str
    apps: Mapping[str, ASGIApp]
    request: HttpRequest
    expected_body: bytes
    messages: tuple[str, ...]
    executed: list[str]
    requests: int
    targets: tuple[Target, ...] = ()


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

    Args:
        scenario: The scenario.
        variant: Which of its apps to call.
        requests: How many requests to send.
        collect_garbage: Run a full garbage collection first, so that the previous round's
            garbage is not collected (and paid for) during this one.

    Raises:
        BenchmarkError: a response or a task count was wrong.
    """
    app = scenario.apps[variant]
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
            or exchange.tasks_done_at_body_end != done
            or len(executed) != done + per_request
        ):
            raise BenchmarkError(_describe_failure(scenario, variant, exchange, done))
        done += per_request
    elapsed = perf_counter() - start
    if executed != list(scenario.messages) * requests:
        raise BenchmarkError(
            f"{scenario.name} / {variant}: the tasks of {requests} requests recorded "
            f"{len(executed)} messages, not {requests} x {list(scenario.messages)} in order."
        )
    return requests / elapsed


def _describe_failure(scenario: Scenario, variant: str, exchange: _Exchange, done: int) -> str:
    where = f"{scenario.name} / {variant}, request {done // max(len(scenario.messages), 1) + 1}"
    if exchange.status != 200 or exchange.body != scenario.expected_body:
        return (
            f"{where}: answered {exchange.status} {exchange.body!r}, expected 200 "
            f"{scenario.expected_body!r}."
        )
    if exchange.tasks_done_at_body_end != done:
        ran = exchange.tasks_done_at_body_end - done
        return f"{where}: {ran} task(s) ran before the response body was sent."
    ran = len(scenario.executed) - done
    return (
        f"{where}: {ran} of {len(scenario.messages)} task(s) had run when the ASGI call "
        f"returned; every task must have run by then."
    )


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

    Raises:
        BenchmarkError: a response or a task count was wrong.
    """
    requests = max(1, round(scenario.requests * scale))
    variants = list(scenario.apps)
    rates: dict[str, list[float]] = {variant: [] for variant in variants}
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
    return ScenarioResult(scenario.name, requests, rates, scenario.targets)


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
