"""Smoke tests of the benchmark: every app answers the same, every task runs, the checks bite.

No timing is asserted: these only show that `python benchmarks/run.py` measures what it claims.
"""

from __future__ import annotations

import anyio
import pytest
from anyio.lowlevel import checkpoint
from benchmarks import run
from benchmarks.apps import EXECUTED, EXPECTED_BODY, REQUEST, VARIANTS, record_sync, scenarios
from benchmarks.harness import (
    BenchmarkError,
    Scenario,
    ScenarioResult,
    Target,
    evaluate,
    measure_round,
    run_scenario,
)
from starlette.types import ASGIApp, Receive, Scope, Send

pytestmark = pytest.mark.anyio

MESSAGE = "message to alice@example.com\n"


@pytest.mark.parametrize("scenario", scenarios(), ids=lambda scenario: scenario.name)
async def test_every_variant_answers_alike_and_runs_every_task_after_the_body(
    scenario: Scenario,
) -> None:
    assert tuple(scenario.apps) == VARIANTS
    for variant in VARIANTS:
        # measure_round raises unless each request got 200 and the exact body, its tasks had not
        # run when the body went out and had all run when the ASGI call returned.
        rate = await measure_round(scenario, variant, 3, collect_garbage=False)
        assert rate > 0
        assert scenario.executed == list(scenario.messages) * 3


async def test_scenarios_send_the_same_request_and_cover_the_issue_targets() -> None:
    all_scenarios = scenarios()
    assert {s.request for s in all_scenarios} == {REQUEST}
    assert {len(s.messages) for s in all_scenarios} == {1, 10, 2}
    targets = {(s.name, t.baseline, t.minimum) for s in all_scenarios for t in s.targets}
    assert targets == {
        ("1 async task", "starlette", 0.9),
        ("1 async task", "fastapi", 3.0),
        ("10 async tasks", "starlette", 0.9),
        ("1 sync task", "starlette", 1.0),
        ("10 sync tasks", "starlette", 5.0),
        ("seed example", "starlette", 1.0),
        ("seed example", "fastapi", 2.0),
    }


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
    result = await run_scenario(scenario, rounds=3, warmup=False, collect_garbage=False)
    assert "".join(order) == "abc" + "bca" + "cab"
    assert {len(rates) for rates in result.rates.values()} == {3}
    assert [outcome.met for outcome in evaluate([result])] == [True, False]


def test_run_prints_every_target_with_its_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    # --all-cpus: pinning would pin the test process itself.
    status = run.main(
        ["--scenario", "seed example", "--rounds", "1", "--scale", "0.01", "--all-cpus"]
    )
    out = capsys.readouterr().out
    assert status in (0, 1)  # which one depends on the machine's timing, not on correctness
    assert "afterward / starlette" in out
    assert "afterward / fastapi" in out
    assert out.count("PASS") + out.count("MISS") == 2
    assert ("targets missed" in out) == (status == 1)


def test_run_refuses_an_unknown_scenario() -> None:
    with pytest.raises(SystemExit, match="Unknown scenario 'nope'"):
        run.main(["--scenario", "nope", "--all-cpus"])


def test_a_ratio_is_the_median_of_the_per_round_ratios() -> None:
    scenario = scenarios()[0]
    result = ScenarioResult(scenario, 1, {"a": [2.0, 4.0, 6.0], "b": [1.0, 4.0, 3.0]})
    assert result.ratio("a", "b") == 2.0  # rounds: 2x, 1x, 2x (the medians' ratio is 4/3)
    assert result.median("a") == 4.0
    assert result.spread("a") == 1.0
