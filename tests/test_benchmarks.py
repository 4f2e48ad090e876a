"""The benchmark's own logic: every app answers the same and runs every task, the checks bite,
rounds are interleaved and paired, both modes are measured, and targets are judged on the lower.

No timing is asserted: these only show that `python benchmarks/run.py` measures what it claims.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest
from anyio.lowlevel import checkpoint
from benchmarks import measure, run
from benchmarks.apps import (
    DETACHED_VARIANTS,
    EXECUTED,
    EXPECTED_BODY,
    REQUEST,
    VARIANTS,
    record_async,
    record_sync,
    scenarios,
)
from benchmarks.harness import BenchmarkError, Scenario, measure_round, run_scenario, serving
from benchmarks.report import format_detached, format_figures
from benchmarks.results import Run, ScenarioResult, Summary, Target, judge, summarize
from starlette.types import ASGIApp, Receive, Scope, Send

from afterward import BackgroundTasksMiddleware, current_tasks

pytestmark = pytest.mark.anyio

MESSAGE = "message to alice@example.com\n"


@pytest.mark.parametrize("scenario", scenarios(), ids=lambda scenario: scenario.name)
async def test_every_variant_answers_alike_and_runs_every_task_after_the_body(
    scenario: Scenario,
) -> None:
    assert tuple(scenario.apps)[: len(VARIANTS)] == VARIANTS
    for variant in VARIANTS:
        # measure_round raises unless each request got 200 and the exact body, its tasks had not
        # run when the body went out and had all run when the ASGI call returned.
        rate = await measure_round(scenario, variant, 3, collect_garbage=False)
        assert rate > 0
        assert scenario.executed == list(scenario.messages) * 3


@pytest.mark.parametrize("scenario", scenarios(), ids=lambda scenario: scenario.name)
async def test_every_detached_variant_answers_alike_and_its_tasks_are_counted_by_round_end(
    scenario: Scenario,
) -> None:
    detached = tuple(scenario.apps)[len(VARIANTS) :]
    assert detached == ("afterward detached",) + (
        ("current_tasks detached",) if scenario.name == "1 sync task" else ()
    )
    assert scenario.detached == frozenset(detached)
    async with serving(scenario):
        for variant in detached:
            middleware = scenario.middleware(variant)
            assert middleware.supervisor is not None
            assert middleware.supervisor.running
            # measure_round raises unless each request got 200 and the exact body, none of its
            # tasks had run when the body went out, and after the supervisor went idle (inside
            # the round) every task of every request had run.
            rate = await measure_round(scenario, variant, 3, collect_garbage=False)
            assert rate > 0
            assert Counter(scenario.executed) == Counter(list(scenario.messages) * 3)
            assert middleware.supervisor.counts() == (0, 0)
    for variant in detached:
        supervisor = scenario.middleware(variant).supervisor
        assert supervisor is not None
        assert not supervisor.running  # drained at shutdown


async def test_scenarios_send_the_same_request_and_cover_the_issue_targets() -> None:
    all_scenarios = scenarios()
    assert {s.request for s in all_scenarios} == {REQUEST}
    assert [len(s.messages) for s in all_scenarios] == [0, 1, 10, 1, 10, 2]
    targets = {(s.name, t.baseline, t.minimum) for s in all_scenarios for t in s.targets}
    assert targets == {
        ("no task", "starlette", 1.0),
        ("1 async task", "starlette", 1.0),
        ("1 async task", "fastapi", 3.0),
        ("10 async tasks", "starlette", 1.0),
        ("1 sync task", "starlette", 1.0),
        ("10 sync tasks", "starlette", 5.0),
        ("seed example", "starlette", 1.0),
        ("seed example", "fastapi", 2.0),
        ("no task", "afterward", 0.95),  # the middleware's cost: afterward detached / afterward
    }
    [middleware_cost] = [t for s in all_scenarios for t in s.targets if t.baseline == "afterward"]
    assert middleware_cost.variant == "afterward detached"
    assert set(DETACHED_VARIANTS) == {v for s in all_scenarios for v in s.detached}


def _scenario(app: ASGIApp) -> Scenario:
    return Scenario(
        name="broken",
        apps={"app": app},
        request=REQUEST,
        expected_body=EXPECTED_BODY,
        messages=(MESSAGE,),
        executed=EXECUTED,
        requests=2,
    )


async def _answer(send: Send, body: bytes = EXPECTED_BODY) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def test_a_task_that_did_not_run_voids_the_round() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await _answer(send)

    with pytest.raises(BenchmarkError, match="0 of 1 task"):
        await measure_round(_scenario(app), "app", 2, collect_garbage=False)


async def test_a_task_run_before_the_body_voids_the_round() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        record_sync(MESSAGE)
        await _answer(send)

    with pytest.raises(BenchmarkError, match="ran before the response body"):
        await measure_round(_scenario(app), "app", 2, collect_garbage=False)


async def test_a_task_still_running_when_the_call_returns_voids_the_round() -> None:
    async with anyio.create_task_group() as group:

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await _answer(send)

            async def later() -> None:
                await checkpoint()
                record_sync(MESSAGE)

            group.start_soon(later)

        with pytest.raises(BenchmarkError, match="0 of 1 task"):
            await measure_round(_scenario(app), "app", 2, collect_garbage=False)


async def test_a_wrong_body_voids_the_round() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await _answer(send, b'{"message":"Message lost"}')
        record_sync(MESSAGE)

    with pytest.raises(BenchmarkError, match="Message lost"):
        await measure_round(_scenario(app), "app", 2, collect_garbage=False)


async def test_a_task_recording_the_wrong_message_voids_the_round() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await _answer(send)
        record_sync("message to somebody else\n")

    with pytest.raises(BenchmarkError, match="not 2 x"):
        await measure_round(_scenario(app), "app", 2, collect_garbage=False)


async def test_run_scenario_interleaves_rounds_and_checks_targets() -> None:
    order: list[str] = []

    def variant(name: str) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            order.append(name)
            await _answer(send)
            record_sync(MESSAGE)

        return app

    scenario = Scenario(
        name="three",
        apps={"a": variant("a"), "b": variant("b"), "c": variant("c")},
        request=REQUEST,
        expected_body=EXPECTED_BODY,
        messages=(MESSAGE,),
        executed=EXECUTED,
        requests=1,
        targets=(Target("a", "b", 0.0), Target("a", "c", 1e9)),
    )
    result = await run_scenario(scenario, rounds=3, warmup=False, control_gc=False)
    assert "".join(order) == "abc" + "bca" + "cab"
    assert {len(rates) for rates in result.rates.values()} == {3}
    assert result.targets == scenario.targets


@pytest.mark.parametrize("control_gc", [True, False], ids=["pinned-gc", "plain-gc"])
async def test_only_the_pinned_mode_freezes_the_garbage_collector_and_it_unfreezes_after(
    control_gc: bool,
) -> None:
    frozen_during_rounds: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        frozen_during_rounds.append(gc.get_freeze_count())
        await _answer(send)
        record_sync(MESSAGE)

    await run_scenario(_scenario(app), rounds=2, warmup=True, control_gc=control_gc)
    warmup, timed = frozen_during_rounds[:2], frozen_during_rounds[2:]
    assert warmup == [0, 0]
    assert all(count > 0 for count in timed) if control_gc else timed == [0] * 4
    assert gc.get_freeze_count() == 0


def _http_only(scope: Scope) -> None:
    if scope["type"] != "http":  # the middleware answers the lifespan for apps that raise here
        raise RuntimeError(f"this app serves http, not {scope['type']}")


def _detached(app: ASGIApp, messages: tuple[str, ...] = (MESSAGE,)) -> Scenario:
    return Scenario(
        name="detached",
        apps={"app": BackgroundTasksMiddleware(app)},
        request=REQUEST,
        expected_body=EXPECTED_BODY,
        messages=messages,
        executed=EXECUTED,
        requests=2,
        detached=frozenset({"app"}),
    )


async def test_a_detached_round_ends_only_when_the_supervisor_has_run_every_task() -> None:
    release = anyio.Event()
    requests = 0

    async def held(message: str) -> None:
        await release.wait()  # no task can run before the round's last request
        await record_async(message)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        _http_only(scope)
        nonlocal requests
        requests += 1
        current_tasks().add_task(held, MESSAGE)
        if requests == 5:
            release.set()
        await _answer(send)

    scenario = _detached(app)
    async with serving(scenario):
        with anyio.fail_after(10):
            await measure_round(scenario, "app", 5, collect_garbage=False)
        assert scenario.executed == [MESSAGE] * 5  # counted before measure_round returned


async def test_run_scenario_serves_the_lifespan_from_before_the_warmup_to_after_rounds() -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.append(message["type"])
                await send({"type": f"{message['type']}.complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        events.append("request")
        current_tasks().add_task(record_sync, MESSAGE)
        await _answer(send)

    scenario = _detached(app)
    result = await run_scenario(scenario, rounds=2, warmup=True, control_gc=False)
    assert events == ["lifespan.startup", *["request"] * 6, "lifespan.shutdown"]
    assert len(result.rates["app"]) == 2
    supervisor = scenario.middleware("app").supervisor
    assert supervisor is not None
    assert not supervisor.running
    assert supervisor.counts() == (0, 0)


async def test_a_detached_variant_without_its_lifespan_voids_the_round() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        _http_only(scope)
        current_tasks().add_task(record_sync, MESSAGE)
        await _answer(send)

    # Without a running supervisor the middleware would run the tasks inline: not detached.
    EXECUTED.clear()
    with pytest.raises(BenchmarkError, match="lifespan is not running"):
        await measure_round(_detached(app), "app", 2, collect_garbage=False)
    assert EXECUTED == []  # refused before any request was sent


async def test_a_detached_task_that_never_ran_voids_the_round() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        _http_only(scope)
        await _answer(send)  # queues nothing: the expected task never runs

    scenario = _detached(app)
    async with serving(scenario):
        with pytest.raises(BenchmarkError, match=r"recorded 0 messages.*in any order"):
            await measure_round(scenario, "app", 2, collect_garbage=False)


async def test_a_detached_variant_must_be_under_the_middleware() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await _answer(send)

    scenario = Scenario(
        name="unwrapped",
        apps={"app": app},
        request=REQUEST,
        expected_body=EXPECTED_BODY,
        messages=(),
        executed=EXECUTED,
        requests=1,
        detached=frozenset({"app"}),
    )
    with pytest.raises(TypeError, match=r"must be an afterward\.BackgroundTasksMiddleware"):
        async with serving(scenario):
            pass


async def test_a_failure_inside_serving_is_raised_as_itself_after_the_shutdown() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        _http_only(scope)
        await _answer(send)

    scenario = _detached(app, messages=())
    with pytest.raises(BenchmarkError, match="a round went wrong"):
        async with serving(scenario):
            raise BenchmarkError("a round went wrong")
    supervisor = scenario.middleware("app").supervisor
    assert supervisor is not None
    assert not supervisor.running


def test_the_detached_table_sets_each_detached_ratio_next_to_the_inline_one() -> None:
    rates = {
        "starlette": [1.0, 1.0, 1.0],
        "afterward": [1.0, 1.1, 1.2],
        "afterward detached": [3.0, 3.3, 3.6],
    }
    run_ = Run("trio", "plain", None, 3, [ScenarioResult("1 sync task", 1, rates)])
    table = format_detached([run_])
    assert "detached/st" in table
    assert "1.10x" in table  # inline / starlette
    assert "3.30x" in table  # detached / starlette
    assert "3.00x" in table  # detached / inline
    assert format_detached([_run("plain", [1.0] * 5)]) == ""


def test_a_target_below_one_is_printed_to_the_hundredth() -> None:
    target = (Target("a", "b", 0.95),)
    run_ = Run("asyncio", "plain", None, 1, [_result("no task", target, a=[1.0], b=[1.0])])
    assert ">= 0.95x" in format_figures(judge([run_]))


def _result(name: str, targets: tuple[Target, ...] = (), **rates: list[float]) -> ScenarioResult:
    return ScenarioResult(name, 1, dict(rates), targets)


def test_a_ratio_pairs_the_rounds_measured_in_the_same_turn() -> None:
    result = _result("x", a=[2.0, 4.0, 6.0, 10.0, 3.0], b=[1.0, 4.0, 3.0, 2.0, 3.0])
    # Per round: 2, 1, 2, 5, 1. The ratio of the medians would be 4 / 3.
    assert result.ratio("a", "b") == Summary(median=2.0, low=1.0, high=2.0)
    assert result.rate("a") == Summary(median=4.0, low=3.0, high=6.0)


def test_rounds_that_were_not_measured_together_cannot_be_paired() -> None:
    result = _result("x", a=[1.0, 2.0], b=[1.0])
    with pytest.raises(ValueError, match="'a' has 2 rounds and 'b' 1"):
        result.ratio("a", "b")


def test_a_single_round_is_its_own_median_and_range() -> None:
    assert summarize([3.0]) == Summary(3.0, 3.0, 3.0)
    with pytest.raises(ValueError, match="at least one value"):
        summarize([])


def _run(mode: str, rates: list[float], backend: str = "asyncio") -> Run:
    target = (Target("a", "b", 1.0),)
    return Run(backend, mode, [0], len(rates), [_result("s", target, a=rates, b=[1.0] * 5)])


def test_a_target_is_judged_on_the_lower_median_of_the_two_modes() -> None:
    pinned = _run("pinned", [1.1, 1.2, 1.2, 1.2, 1.3])
    plain = _run("plain", [0.9, 0.95, 0.98, 0.99, 1.0])
    [outcome] = judge([pinned, plain])
    assert outcome.ratios["pinned"].median == 1.2
    assert outcome.deciding == "plain"
    assert not outcome.met  # met pinned, missed plain: missed
    assert not outcome.close  # 1.0 lies above plain's middle half (0.95-0.99)
    figures = format_figures([outcome])
    assert "1.20x [1.20-1.20]" in figures
    assert "0.98x [0.95-0.99]" in figures
    assert "MISS" in figures


def test_a_target_inside_the_deciding_interquartile_range_is_marked_as_noise() -> None:
    [outcome] = judge([_run("pinned", [0.9, 1.0, 1.05, 1.1, 1.2]), _run("plain", [1.3] * 5)])
    assert outcome.deciding == "pinned"
    assert outcome.met
    assert outcome.close
    assert "PASS (noise)" in format_figures([outcome])


def test_each_backend_is_judged_on_its_own_runs() -> None:
    runs = [_run("pinned", [2.0] * 5), _run("plain", [0.5] * 5, backend="trio")]
    assert [(o.backend, o.met) for o in judge(runs)] == [("asyncio", True), ("trio", False)]


def test_modes_that_measured_different_scenarios_are_not_compared() -> None:
    other = Run("asyncio", "plain", None, 1, [_result("other", a=[1.0], b=[1.0])])
    with pytest.raises(ValueError, match="same --scenario options"):
        judge([_run("pinned", [1.0] * 5), other])


def test_a_run_survives_its_trip_through_json() -> None:
    run_ = _run("plain", [1.0, 2.0, 3.0, 4.0, 5.0])
    assert Run.from_json(json.loads(json.dumps(run_.to_json()))) == run_


def test_the_plain_mode_measures_every_selected_scenario_without_pinning() -> None:
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    result = measure.measure(
        "asyncio", "plain", rounds=2, scale=0.01, names=["no task", "10 sync tasks"]
    )
    assert [r.name for r in result.results] == ["no task", "10 sync tasks"]
    assert {len(rates) for r in result.results for rates in r.rates.values()} == {2}
    assert result.cpus == (sorted(before) if before is not None else None)


def test_measure_refuses_an_unknown_scenario_and_mode() -> None:
    with pytest.raises(SystemExit, match="Unknown scenario 'nope'; choose from no task, "):
        measure.select(scenarios(), ["nope"])
    with pytest.raises(ValueError, match="mode must be one of"):
        measure.measure("asyncio", "pinned-ish", rounds=1, scale=1.0)


def test_a_measuring_process_that_finds_a_broken_app_reports_an_invalid_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> list[ScenarioResult]:
        raise BenchmarkError("seed example / afterward, request 1: answered 500")

    monkeypatch.setattr(measure, "run_benchmark", broken)
    arguments = ["--backend", "trio", "--mode", "plain", "--rounds", "1", "--scale", "1"]
    status = measure.main([*arguments, "--out", str(tmp_path / "out.json")])
    assert status == 2
    assert "INVALID RUN (trio, plain): seed example / afterward" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


@pytest.fixture
def inside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run `run.main` here, whichever environment the tests run in."""
    monkeypatch.setattr(run, "in_project_environment", lambda: True)


@pytest.mark.usefixtures("inside")
def test_run_stops_with_status_2_when_a_measuring_process_finds_an_invalid_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    commands: list[list[str]] = []

    def launch(command: list[str]) -> int:
        commands.append(command)
        return 2

    assert run.main(["--quick"], launch=launch) == 2
    assert len(commands) == 1
    assert commands[0][:3] == [sys.executable, "-m", "benchmarks.measure"]
    assert "measuring asyncio, pinned ... failed." in capsys.readouterr().out


@pytest.mark.usefixtures("inside")
def test_run_measures_each_backend_in_both_modes_in_fresh_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "runs.json"
    arguments = ["--backend", "trio", "--scenario", "seed example", "--rounds", "2"]
    status = run.main([*arguments, "--scale", "0.02", "--json", str(saved)])
    out = capsys.readouterr().out
    assert status in (0, 1)  # which one depends on the machine's timing, not on correctness
    runs = [Run.from_json(data) for data in json.loads(saved.read_text())]
    assert [(r.backend, r.mode) for r in runs] == [("trio", "pinned"), ("trio", "plain")]
    if hasattr(os, "sched_getaffinity"):
        pinned, plain = (r.cpus or [] for r in runs)
        assert len(pinned) == 1  # pinned in its own process, not in this one
        assert plain == sorted(os.sched_getaffinity(0))
    assert "pinned+frozen" in out
    assert "plain" in out
    assert out.count("PASS") + out.count("MISS") == 2  # two targets, one verdict each
    assert ("targets missed" in out) == (status == 1)


def test_run_outside_the_environment_installs_it_and_runs_again_inside(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[object] = []

    class Replaced(Exception):
        pass

    def ensure(extras: list[str]) -> Path:
        calls.append(extras)
        return Path("/project/.venv/bin/python")

    def exec_(command: list[str]) -> None:
        calls.append(command)
        raise Replaced  # os.execv does not return either

    monkeypatch.setattr(run, "in_project_environment", lambda: False)
    monkeypatch.setattr("benchmarks.run._venv.ensure", ensure)
    monkeypatch.setattr(run, "_exec", exec_)
    monkeypatch.setattr("benchmarks.run.os.name", "posix")
    with pytest.raises(Replaced):
        run.main(["--quick", "--backend", "trio"])
    script = str(Path(run.__file__).resolve())
    assert calls == [
        ["test"],
        ["/project/.venv/bin/python", script, "--quick", "--backend", "trio"],
    ]


def test_only_the_project_environment_counts_as_inside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "prefix", str(run.ROOT / ".venv"))
    assert run.in_project_environment()
    monkeypatch.setattr(sys, "prefix", str(run.ROOT))
    assert not run.in_project_environment()
