"""§6 Isolation and security, through a real uvicorn process.

- Under concurrency, each task sees its own request's context variables and collector
  (`current_tasks()` inside the task is the collector its request added it to).
- A task added to a collector whose request is over and whose tasks have run is refused with a
  clear error, never accepted and silently never run.
- A failing task's log line names the task and the exception; neither the task's arguments (an
  e-mail address, a token) nor the request's headers and cookies appear anywhere in the log.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from reliability_server import (
    MODES,
    Server,
    figure,
    scale,
    shared_servers,  # noqa: F401  (the `shared` fixture)
)


@pytest.mark.parametrize("mode", MODES)
def test_concurrent_requests_never_see_each_others_context_or_collector(
    mode: str, shared: Callable[[str], Server]
) -> None:
    requests = scale(1000, 10_000)
    server = shared(mode)
    result = server.load("/isolation/{i}", requests, 50)
    got = server.records(2 * requests)["items"]
    mixed = [item for item in got if not item.endswith(":ok")]
    figure("isolation", mode, requests=requests, tasks_checked=len(got), mixed=len(mixed))
    assert result["statuses"] == {"200": requests}, result
    assert sorted(got) == sorted(f"{n}:ok" for n in range(requests) for _ in range(2))


@pytest.mark.parametrize("mode", MODES)
def test_adding_to_a_request_whose_tasks_have_run_is_refused_clearly(
    mode: str, shared: Callable[[str], Server]
) -> None:
    server = shared(mode)
    assert server.get("/late/a") == {"answer": "first"}
    server.records(1)  # a's own task has run
    answer = server.get("/late/b")["answer"]
    figure("late-add", mode, answer=answer[:60])
    if answer == "accepted":
        # Accepted is only right if the task then runs.
        items = server.records(3, wait=1)["items"]
        assert "b:0" in items, f"the task was accepted and never ran: {items}"
    else:
        assert answer.startswith("refused: "), answer
        assert "after its run has ended" in answer or "never run" in answer, answer


@pytest.mark.parametrize("mode", MODES)
def test_a_failure_log_names_the_task_never_its_arguments_nor_the_requests_secrets(
    mode: str, shared: Callable[[str], Server]
) -> None:
    headers = {
        "Authorization": "Bearer header-secret-4711",
        "Cookie": "session=cookie-secret-0815",
    }
    server = shared(mode)
    response = server.client.get("/fault/secret/alice", headers=headers)
    assert response.status_code == 200
    server.records(1)  # the task after the failing one has run: the failure is logged
    server.output.wait_for(1, "reliability_app.send_welcome failed")  # and read from the pipe
    text = "\n".join(server.since_mark())
    failure = [line for line in text.splitlines() if "reliability_app.send_welcome failed" in line]
    leaks = [
        s
        for s in ("alice@example.com", "token-alice", "header-secret", "cookie-secret")
        if s in text
    ]
    figure("log-secrets", mode, failure_lines=len(failure), leaks=len(leaks))
    assert len(failure) == 1, text[-3000:]
    assert "the mail server refused the message" in text  # the exception is there
    assert leaks == [], text[-3000:]
