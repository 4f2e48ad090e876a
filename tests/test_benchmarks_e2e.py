"""The end-to-end benchmark's own logic, and one short real round through uvicorn and wrk.

No timing is asserted: these show that `python benchmarks/e2e.py` reads wrk correctly, pairs its
rounds, counts every task and says so loudly when one is missing, and that each app it serves
answers alike and counts its tasks.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from benchmarks import e2e
from benchmarks.e2e import (
    TARGETS,
    BenchmarkError,
    Count,
    Results,
    Server,
    WrkResult,
    check_round,
    format_targets,
    interleaving,
    parse_wrk,
    run_rounds,
    summarize_profile,
)
from benchmarks.e2e_apps import EXPECTED_BODY, PATH, VARIANTS, counted
from starlette.types import ASGIApp, Message, Scope

WRK = shutil.which("wrk")
# On a developer's machine without wrk the real rounds skip, saying how to enable them; in CI
# (.ci/run installs wrk and sets AFTERWARD_REQUIRE_WRK=1) they never skip: a missing wrk fails
# them there.
NEEDS_WRK = pytest.mark.skipif(
    WRK is None and not (os.environ.get("CI") or os.environ.get("AFTERWARD_REQUIRE_WRK") == "1"),
    reason="wrk is not installed (`apt-get install wrk`): no real round is run",
)

WRK_REPORT = """\
Running 3s test @ http://127.0.0.1:8000/send-notification/alice@example.com?q=hello
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  310.00us   9.87ms   91.20%
    Req/Sec    40.10k     1.20k   42.00k    80.00%
  120345 requests in 3.00s, 17.33MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:  40113.23
Transfer/sec:      5.78MB
"""


# --- reading wrk --------------------------------------------------------------------------------


def test_parse_wrk_reads_requests_duration_rate_errors_and_non_2xx() -> None:
    result = parse_wrk(WRK_REPORT)
    assert result == WrkResult(
        requests=120345,
        seconds=3.0,
        rate=40113.23,
        non_2xx=12,
        socket_errors={"read": 2, "timeout": 1},
    )
    assert result.ok == 120333


def test_parse_wrk_of_a_clean_run_has_no_errors_and_reads_minutes() -> None:
    clean = "\n".join(
        line
        for line in WRK_REPORT.replace("in 3.00s", "in 1.00m").splitlines()
        if "Socket errors" not in line and "Non-2xx" not in line
    )
    result = parse_wrk(clean)
    assert (result.non_2xx, result.socket_errors, result.seconds) == (0, {}, 60.0)
    assert result.ok == result.requests == 120345


def test_parse_wrk_refuses_a_report_without_the_request_count() -> None:
    with pytest.raises(BenchmarkError, match="Could not read wrk's report"):
        parse_wrk("unable to connect to 127.0.0.1:8000 Connection refused\n")


# --- counting -----------------------------------------------------------------------------------


def _wrk(ok: int, non_2xx: int = 0) -> WrkResult:
    return WrkResult(requests=ok + non_2xx, seconds=1.0, rate=float(ok), non_2xx=non_2xx)


def test_a_round_whose_tasks_all_ran_passes_with_requests_in_flight_when_wrk_stopped() -> None:
    before = Count(requests=10, tasks=20)
    # 1000 requests handled, 1000 x 2 tasks; wrk saw 990: 10 were in flight (at most 50).
    after = Count(requests=1010, tasks=2020)
    assert check_round(2, _wrk(990), before, after, connections=50) == []


def test_a_missing_task_is_reported_with_the_numbers() -> None:
    problems = check_round(2, _wrk(1000), Count(0, 0), Count(1000, 1999), connections=50)
    assert problems[0] == (
        "1999 tasks ran for 1000 requests handled, expected 2000 (2 per request): 1 missing"
    )
    assert "1999 tasks ran for 1000 2xx responses x 2 tasks each" in problems


def test_a_task_run_twice_is_reported() -> None:
    problems = check_round(1, _wrk(1000), Count(0, 0), Count(1000, 1001), connections=50)
    assert problems == [
        "1001 tasks ran for 1000 requests handled, expected 1000 (1 per request): 1 too many"
    ]


def test_more_2xx_than_requests_handled_or_too_many_in_flight_is_reported() -> None:
    fewer = check_round(1, _wrk(1000), Count(0, 0), Count(999, 999), connections=50)
    assert any("handled 999 requests but wrk received 1000" in p for p in fewer)
    more = check_round(1, _wrk(1000), Count(0, 0), Count(1051, 1051), connections=50)
    assert any("handled 1051 requests but wrk received 1000" in p for p in more)


def test_non_2xx_responses_are_reported() -> None:
    problems = check_round(0, _wrk(990, non_2xx=10), Count(0, 0), Count(990, 0), connections=50)
    assert problems == ["wrk received 10 non-2xx responses"]


def test_counted_reads_a_counter_without_moving_it() -> None:
    counter = itertools.count()
    assert counted(counter) == 0
    for _ in range(12345):
        next(counter)
    assert counted(counter) == counted(counter) == 12345


# --- pairing and targets ------------------------------------------------------------------------


def test_interleaving_rotates_the_first_variant_every_round() -> None:
    names = ["a", "b", "c"]
    assert [interleaving(names, i) for i in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]


def test_a_ratio_is_the_median_of_per_round_ratios_not_the_ratio_of_medians() -> None:
    results = Results(rates={"fast": [10.0, 40.0, 90.0], "base": [10.0, 10.0, 30.0]})
    assert results.ratio("fast", "base") == 3.0  # rounds: 1, 4, 3
    assert results.median("fast") / results.median("base") == 4.0
    assert results.spread("base") == 2.0  # (30 - 10) / 10


def test_targets_are_those_of_the_issue() -> None:
    assert {(t.variant, t.baseline, t.minimum) for t in TARGETS} == {
        ("detached-sync", "starlette-sync", 6.0),
        ("detached-sync-plain", "starlette-sync", 6.0),
        ("detached-sync10", "starlette-sync10", 6.0),
        ("detached-seed", "starlette-seed", 6.0),
        ("detached-none", "starlette-none", 0.95),
        ("inline-none", "starlette-none", 0.95),
        ("inline-async", "starlette-async", 0.95),
        ("inline-sync", "litestar-sync", 1.0),
        ("inline-seed", "litestar-seed", 1.0),
    }
    for target in TARGETS:
        assert target.variant in VARIANTS
        assert target.baseline in VARIANTS


def test_targets_table_says_pass_and_miss_and_skips_targets_not_measured() -> None:
    results = Results(
        rates={
            "starlette-none": [100.0, 100.0],
            "inline-none": [96.0, 95.0],
            "detached-none": [90.0, 94.0],
        }
    )
    table, checked, missed = format_targets(results)
    assert (checked, missed) == (2, 1)  # inline-none and detached-none vs starlette-none
    lines = table.splitlines()
    assert any("inline, no task" in line and "PASS" in line for line in lines)
    assert any("middleware with no task" in line and "MISS" in line for line in lines)
    assert not any("Litestar" in line for line in lines)


def test_summarize_profile_counts_samples_per_thread_and_frame() -> None:
    raw = (
        "thread (0x1): MainThread;main (app.py:1);send (uvicorn.py:5) 30\n"
        "thread (0x2): afterward-worker-1;_work (w.py:9);run (w.py:20) 10\n"
        "thread (0x1): MainThread;main (app.py:1) 10\n"
    )
    summary = summarize_profile(raw)
    assert "50 samples" in summary
    assert "80.0%  thread: MainThread" in summary
    assert "20.0%  thread: afterward-worker-N" in summary
    assert "60.0%  send (uvicorn.py:5)" in summary


# --- the apps, in-process -----------------------------------------------------------------------


@asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Run the app's lifespan around the block, as uvicorn does (so detached mode is on)."""
    to_app, app_receives = anyio.create_memory_object_stream[Message](2)
    app_sends, from_app = anyio.create_memory_object_stream[Message](2)

    async def send(message: Message) -> None:
        await app_sends.send(message)

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    async with to_app, app_receives, app_sends, from_app, anyio.create_task_group() as group:

        async def run_app() -> None:
            await app(scope, app_receives.receive, send)

        group.start_soon(run_app)
        await to_app.send({"type": "lifespan.startup"})
        assert (await from_app.receive())["type"] == "lifespan.startup.complete"
        yield
        await to_app.send({"type": "lifespan.shutdown"})
        assert (await from_app.receive())["type"] == "lifespan.shutdown.complete"


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(VARIANTS))
async def test_every_app_answers_alike_and_counts_its_request_and_tasks(name: str) -> None:
    variant = VARIANTS[name]
    app = variant.build()
    transport = httpx.ASGITransport(app=app)
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        before = (await client.get("/count")).json()
        for _ in range(3):
            response = await client.post(PATH)
            assert (response.status_code, response.content) == (200, EXPECTED_BODY)
        with anyio.fail_after(5):
            while True:  # detached tasks run after the call returns: wait until counted
                after = (await client.get("/count")).json()
                if after["tasks"] - before["tasks"] >= 3 * variant.tasks:
                    break
                await anyio.sleep(0.01)
    assert after["requests"] - before["requests"] == 3
    assert after["tasks"] - before["tasks"] == 3 * variant.tasks


@pytest.mark.anyio
@pytest.mark.parametrize(
    "name",
    [name for name, variant in VARIANTS.items() if variant.detached and variant.tasks],
)
async def test_detached_variants_run_their_tasks_in_afterwards_worker_threads(name: str) -> None:
    variant = VARIANTS[name]
    app = variant.build()
    transport = httpx.ASGITransport(app=app)
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        before = (await client.get("/count")).json()
        assert (await client.post(PATH)).status_code == 200
        with anyio.fail_after(5):
            while (await client.get("/count")).json()["tasks"] - before["tasks"] < variant.tasks:
                await anyio.sleep(0.01)
        after = (await client.get("/count")).json()
    assert after["in_workers"] - before["in_workers"] == variant.tasks


def test_a_detached_variant_whose_tasks_ran_inline_is_named_loudly() -> None:
    results = Results(rates={"detached-sync": [1.0], "detached-sync-plain": [1.0]})
    e2e.note_detachment(results, "detached-sync", Count(0, 0, 0), Count(100, 100, 0))
    e2e.note_detachment(results, "detached-sync-plain", Count(0, 0, 0), Count(100, 100, 100))
    e2e.note_detachment(results, "starlette-sync", Count(0, 0, 0), Count(100, 100, 0))
    assert results.inline == {"detached-sync": (0, 100)}
    assert e2e.format_detachment(results) == (
        "!!! NOT DETACHED !!! detached-sync: 0 of 100 tasks ran in afterward's worker threads; "
        "the others ran inside their requests, so its figures measure the inline path."
    )
    assert "detached-sync " in e2e.format_rates(results)
    assert "NOT DETACHED" in e2e.format_rates(results).splitlines()[-2]


# --- through uvicorn and wrk --------------------------------------------------------------------


@NEEDS_WRK
def test_one_real_round_through_uvicorn_and_wrk_counts_every_task(tmp_path: Path) -> None:
    assert WRK is not None
    server = Server("detached-sync-plain", loop="uvloop", http="httptools", logs=tmp_path)
    try:
        server.check_one_request()
        results = run_rounds([server], rounds=2, duration=1, connections=8, threads=1, wrk=WRK)
    finally:
        server.stop()
    assert results.problems == []
    assert results.inline == {}  # every task ran in afterward's worker threads
    assert len(results.rates["detached-sync-plain"]) == 2
    assert min(results.rates["detached-sync-plain"]) > 0


@NEEDS_WRK
def test_the_command_line_prints_rates_and_targets_and_exits_by_the_outcome(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = e2e.main(
        [
            "--variant",
            "starlette-none",
            "--variant",
            "inline-none",
            "--rounds",
            "1",
            "--duration",
            "1",
            "--connections",
            "8",
        ]
    )
    out = capsys.readouterr().out
    assert "uvicorn servers (--loop uvloop --http httptools" in out
    assert "inline, no task" in out
    assert status == (0 if "PASS" in out else 1)
    assert ("All 1 targets met." in out) == (status == 0)


def test_missing_modules_names_what_the_chosen_servers_need(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert e2e.missing_modules(["starlette-none"], loop="asyncio", http="h11") == ["uvicorn"]
    assert e2e.missing_modules(["litestar-sync"], loop="uvloop", http="httptools") == [
        "httptools",
        "litestar",
        "uvicorn",
        "uvloop",
    ]
