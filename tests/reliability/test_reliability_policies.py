"""§2 with task policies (`afterward.task`): timeouts and retries, through a real uvicorn process.

- Async tasks that hang forever, each with a timeout policy: each is cancelled at its timeout and
  logged once, by name, and the tasks after it run. Detached, with `max_running=5`: sixty such
  requests pass through the five slots, then ordinary requests' tasks run (a slot held by a hung
  task would stop them all); inline, each request's ASGI call ends.
- Retries under load: each request queues a sync and an async task that fail twice and succeed
  on the third attempt; every attempt records itself, so the counts are exact.
"""

from __future__ import annotations

import pytest
from reliability_server import MODES, figure, scale, served

MAX_RUNNING = 5


@pytest.mark.parametrize("mode", MODES)
def test_hung_tasks_with_a_timeout_are_cancelled_logged_once_and_free_their_slot(
    mode: str,
) -> None:
    hung = scale(60, 600)
    requests = scale(300, 3000)
    with served(mode, graceful=1, MAX_RUNNING=MAX_RUNNING, TIMEOUT=0.2) as server:
        faults = server.load("/fault/hangtimeout/h{i}", hung, 20)
        work = server.load("/work/{i}", requests, 20)
        expected = {f"h{n}:after" for n in range(hung)}
        expected |= {f"{n}:{index}" for n in range(requests) for index in range(3)}
        got = server.records(len(expected), wait=60)["items"]
        server.terminate()
        server.process.wait(30)
        server.output.wait_for(1, "<eof>")
    timed_out = server.output.count("Background task reliability_app.hang_async failed")
    tracebacks = sum(line.startswith("TimeoutError") for line in server.output.lines)
    interrupted = server.output.count("hang_async was interrupted")
    figure(
        "policy-timeout",
        mode,
        hung_requests=hung,
        timeouts_logged=timed_out,
        after_tasks_run=sum(item.endswith(":after") for item in got),
        work_tasks_run=len(got) - hung,
        hung_named_at_shutdown=interrupted,
        work_p50_ms=work["p50_ms"],
        work_p99_ms=work["p99_ms"],
    )
    assert faults["statuses"] == {"200": hung}, faults
    assert work["statuses"] == {"200": requests}, work
    assert set(got) == expected
    assert len(got) == len(expected)
    assert timed_out == hung
    assert tracebacks == hung  # each with its TimeoutError
    assert interrupted == 0  # nothing left hanging at shutdown


@pytest.mark.parametrize("mode", MODES)
def test_retries_under_load_give_exact_counts(mode: str) -> None:
    requests = scale(300, 3000)
    with served(mode, graceful=1) as server:
        result = server.load("/fault/retry/r{i}", requests, 20)
        expected = {
            f"r{n}:{kind}-attempt-{attempt}"
            for n in range(requests)
            for kind in ("sync", "async")
            for attempt in (1, 2, 3)
        } | {f"r{n}:after" for n in range(requests)}
        got = server.records(len(expected), wait=60)["items"]
        server.terminate()
        server.process.wait(30)
        server.output.wait_for(1, "<eof>")
    retrying = server.output.count("; retrying in")
    failed = [line for line in server.output.lines if " ERROR " in line]
    figure(
        "policy-retries",
        mode,
        requests=requests,
        attempts_recorded=len(got) - requests,
        attempts_expected=6 * requests,
        retries_logged=retrying,
        errors_logged=len(failed),
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
    )
    assert result["statuses"] == {"200": requests}, result
    assert set(got) == expected
    assert len(got) == len(expected), "an attempt ran twice"
    assert retrying == 4 * requests  # two failed attempts of each of the two tasks
    assert not failed, failed[:5]
