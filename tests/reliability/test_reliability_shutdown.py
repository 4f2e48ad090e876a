"""§4 Process faults (in-process tasks): SIGTERM with tasks running and waiting, and a second one.

A real uvicorn process. Inline modes: the deadline is uvicorn's --timeout-graceful-shutdown
(the tasks run inside the request's ASGI call, which uvicorn waits for, then cancels). Detached
mode: the middleware's drain_timeout (uvicorn's graceful timeout is set longer, so the drain is
what decides). Each task prints when it starts and finishes; the afterward logger prints the
tasks it abandons.
"""

from __future__ import annotations

import signal
import time
from contextlib import AbstractContextManager

import pytest
from reliability_server import INLINE, MODES, Server, figure, served

MARGIN = 3.0  # seconds past the deadline a process may take to exit (interpreter teardown)
WORKERS = 2


def serve(mode: str, deadline: int, task_seconds: float) -> AbstractContextManager[Server]:
    """`served(mode)`, with `deadline` as the shutdown deadline that applies in `mode`."""
    if mode in INLINE:
        return served(mode, graceful=deadline, TASK_SECONDS=task_seconds)
    return served(
        mode,
        graceful=deadline + 30,
        TASK_SECONDS=task_seconds,
        DRAIN_TIMEOUT=deadline,
        WORKERS=WORKERS,
    )


def stop(server: Server, *, twice: bool = False) -> float:
    """SIGTERM the server (a second time once it is shutting down); return how long it took."""
    started = time.monotonic()
    server.terminate()
    if twice:
        server.output.wait_for(1, "Shutting down")
        server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(60)
    elapsed = time.monotonic() - started
    server.output.wait_for(1, "<eof>")
    assert code in (0, -signal.SIGTERM), server.output.text[-3000:]
    return elapsed


@pytest.mark.parametrize("mode", MODES)
def test_sigterm_lets_the_tasks_within_the_deadline_finish(mode: str) -> None:
    requests = 4
    deadline = 10
    with serve(mode, deadline, task_seconds=0.5) as server:
        answer = server.load("/fault/slow/s{i}", requests, requests)
        assert answer["statuses"] == {"200": requests}
        server.output.wait_for(1, "started slow_async")
        elapsed = stop(server)
    text = server.output.text
    finished = sum(
        f"finished {name} s{n}" in server.output.lines
        for n in range(requests)
        for name in ("slow_async", "slow_sync", "quick")
    )
    figure("sigterm-within", mode, tasks=3 * requests, finished=finished, exit_s=round(elapsed, 2))
    assert finished == 3 * requests, text[-3000:]
    assert "ERROR" not in text, text[-3000:]
    assert "WARNING" not in text, text[-3000:]
    assert elapsed < deadline


@pytest.mark.parametrize("twice", [False, True], ids=["once", "twice"])
@pytest.mark.parametrize("mode", MODES)
def test_sigterm_past_the_deadline_names_every_task_it_abandons_and_exits_in_time(
    mode: str, twice: bool
) -> None:
    deadline = 1
    with serve(mode, deadline, task_seconds=120) as server:
        # Async tasks still running, sync tasks blocking their threads, and tasks waiting.
        assert server.load("/fault/slow/a{i}", 3, 3)["statuses"] == {"200": 3}
        assert server.load("/fault/slowsync/t{i}", 3, 3)["statuses"] == {"200": 3}
        server.output.wait_for(3, "started slow_async")
        server.output.wait_for(WORKERS, "started slow_sync")
        elapsed = stop(server, twice=twice)
    text = server.output.text
    figure(
        "sigterm-past" + ("-twice" if twice else ""),
        mode,
        deadline_s=deadline,
        exit_s=round(elapsed, 2),
        finished=text.count("finished slow"),
    )
    assert "finished slow" not in text
    # Every task queued is named once: interrupted, abandoned in its thread, or never started.
    logged = [line for line in server.output.lines if line.startswith("afterward ")]
    named = {
        name: sum(line.count(f"reliability_app.{name}") for line in logged)
        for name in ("slow_async", "slow_sync", "quick", "record_sync")
    }
    assert named == {"slow_async": 3, "slow_sync": 6, "quick": 6, "record_sync": 6}, text[-4000:]
    assert elapsed < deadline + MARGIN, f"exit took {elapsed:.1f} s:\n{text[-3000:]}"
