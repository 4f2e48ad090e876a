"""§1 and §4 with the Celery backend: real uvicorn, real Redis, real `celery worker` processes.

The web process is `apps/celery_web.py` under uvicorn (`BackgroundTasksMiddleware` with
`CeleryBackend`, hand-off before the response); the load comes from `loadgen.py` in another
process; the workers are the Celery tests' own (`tests/apps/celery_tasks.py`, solo pool), and
each task records `rid:index` in a Redis list of the test's own, so every execution is counted:

- load: every request's three tasks (sync, async, sync) run, exactly once, no 5xx;
- the web process killed with SIGKILL while requests flow: every request answered 2xx has its
  tasks run by a worker started afterwards;
- a worker killed with SIGKILL while it works through a queue: every task runs on the next
  worker (at least once: what the killed one held comes back after the visibility timeout);
- the broker (a private `redis-server`) restarted while requests flow: every 2xx has its tasks
  run (at least once: duplicates are counted and reported), every other answer is a 503 whose
  tasks are named in the log, and requests succeed again once it is back.

A worker killed in the middle of one long task is `test_celery_worker.py`'s
`test_a_task_whose_worker_is_killed_completes_on_a_new_worker`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from reliability_server import Server, figure, free_port, scale, served

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))

from celery_worker import TIMEOUT, Session, celery_session, start_worker, take

__all__ = ["celery_session"]  # the fixture, imported for pytest to find

pytestmark = pytest.mark.celery

NOT_QUEUED = "Could not queue "
NAMES = "celery_tasks.record, celery_tasks.arecord, celery_tasks.record."
PARTLY = "Those queued before the failure will run: "


def web(
    session: Session, queue: str, broker: str | None = None
) -> contextlib.AbstractContextManager[Server]:
    """Serve `celery_web:app` for `session`, sending to `queue` on `broker` (default: Redis)."""
    env: dict[str, str | float | int] = {
        "AFTERWARD_TEST_REDIS": session.url,
        "AFTERWARD_TEST_BROKER": broker or session.url,
        "AFTERWARD_TEST_PREFIX": session.prefix,
        "AFTERWARD_TEST_QUEUE": queue,
    }
    return served("celery", graceful=10, app="celery_web:app", **env)


def path(key: str) -> str:
    return "/work/{i}?key=" + key


def take_until(client: redis.Redis, key: str, last: str) -> list[str]:
    """Pop records from `key` until `last` (a task queued after all the others) arrives."""
    taken: list[str] = []
    while last not in taken:
        taken += take(client, key, 1)
    return taken


def queue_last(server: Server, key: str) -> str:
    """Queue one more request's tasks behind everything else; return its last record."""
    assert server.get("/work/last", key=key) == {"rid": "last"}
    return "last:2"


def by_status(result: dict[str, Any]) -> dict[int, list[str]]:
    """The request numbers of a `--by-request` load, by status (0: no answer)."""
    groups: dict[int, list[str]] = collections.defaultdict(list)
    for number, status in result["by_request"].items():
        groups[status].append(number)
    return groups


def check_records(records: list[str], answered: list[str]) -> tuple[dict[str, int], int]:
    """Assert each answered request's three tasks ran; return the counts and duplicates."""
    counts = collections.Counter(records)
    missing = [f"{n}:{i}" for n in answered for i in range(3) if not counts[f"{n}:{i}"]]
    assert not missing, f"{len(missing)} task(s) of 2xx requests never ran: {missing[:20]}"
    return counts, sum(count - 1 for count in counts.values())


def test_under_load_every_task_runs_exactly_once_on_the_workers(
    celery_session: Session, tmp_path: Path
) -> None:
    requests = scale(500, 5000)
    queue, key = f"{celery_session.queue}-load", celery_session.key()
    client = celery_session.client()
    worker = start_worker(celery_session, tmp_path / "worker.log", queue=queue)
    try:
        with web(celery_session, queue) as server:
            result = server.load(path(key), requests, 20)
            records = take(client, key, 3 * requests, timeout=TIMEOUT)
            records += take_until(client, key, queue_last(server, key))
        server.output.wait_for(1, "<eof>")
    finally:
        worker.stop()
    expected = {f"{n}:{i}" for n in range(requests) for i in range(3)}
    extra = {f"last:{i}" for i in range(3)}
    errors = [line for line in server.output.lines if " ERROR " in line]
    figure(
        "celery-load",
        "celery",
        requests=requests,
        executed=len(records) - 3,
        expected=3 * requests,
        statuses=result["statuses"],
        errors=result["errors"],
        rps=result["rps"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        error_lines=len(errors),
    )
    assert result["statuses"] == {"200": requests}, result
    assert result["errors"] == 0
    assert sorted(records) == sorted(expected | extra), "a task was lost or ran twice"
    assert client.llen(key) == 0
    assert not errors, errors


def test_a_web_process_killed_after_answering_loses_no_task(
    celery_session: Session, tmp_path: Path
) -> None:
    requests = scale(300, 4000)
    queue, key = f"{celery_session.queue}-kill9", celery_session.key()
    client = celery_session.client()
    with web(celery_session, queue) as server:
        with server.loading(path(key), requests, 10, by_request=True) as load:
            server.output.wait_for(requests // 3, "handled ")
            server.process.kill()  # SIGKILL: no shutdown, no drain, requests in flight
            out, _ = load.communicate(timeout=60)
        assert server.process.wait(10) == -9
    result = json.loads(out)
    groups = by_status(result)
    # The worker starts after the web process has died: it only has what was queued.
    worker = start_worker(celery_session, tmp_path / "worker.log", queue=queue)
    try:
        with web(celery_session, queue) as again:
            records = take_until(client, key, queue_last(again, key))
    finally:
        worker.stop()
    counts, duplicates = check_records(records, groups[200])
    unanswered = groups[0]
    ran_unanswered = sum(all(counts[f"{n}:{i}"] for i in range(3)) for n in unanswered)
    figure(
        "celery-web-killed",
        "celery",
        requests_sent=len(result["by_request"]),
        answered_2xx=len(groups[200]),
        no_answer=len(unanswered),
        tasks_of_2xx_executed=sum(counts[f"{n}:{i}"] for n in groups[200] for i in range(3)),
        unanswered_whose_tasks_ran=ran_unanswered,
        duplicates=duplicates,
    )
    assert set(groups) <= {200, 0}, result["statuses"]
    assert len(groups[200]) >= requests // 3 - 10
    assert duplicates == 0
    assert client.llen(key) == 0


def test_a_worker_killed_under_load_loses_no_task(celery_session: Session, tmp_path: Path) -> None:
    requests = scale(200, 2000)
    queue, key = f"{celery_session.queue}-wkill", celery_session.key()
    client = celery_session.client()
    first = start_worker(celery_session, tmp_path / "first.log", queue=queue, visibility=2)
    second = None
    try:
        with web(celery_session, queue) as server:
            result = server.load(path(key), requests, 10)
            records = take(client, key, requests * 3 // 4)  # the first worker is busy
            first.kill()  # SIGKILL: its unacknowledged message goes back after the timeout
            second = start_worker(
                celery_session, tmp_path / "second.log", queue=queue, visibility=2
            )
            records += take_until(client, key, queue_last(server, key))
            # What the killed worker held comes back when the visibility timeout (2 s) has passed
            # (the new worker looks every second), maybe after the last request: wait that out.
            while (late := client.blpop([key], timeout=4)) is not None:
                records.append(str(late[1]))
    finally:
        first.stop()
        if second is not None:
            second.stop()
    _, duplicates = check_records(records, [str(n) for n in range(requests)])
    figure(
        "celery-worker-killed",
        "celery",
        requests=requests,
        statuses=result["statuses"],
        run_before_the_kill=requests * 3 // 4,
        tasks_executed=len(records) - 3,
        expected=3 * requests,
        duplicates=duplicates,
    )
    assert result["statuses"] == {"200": requests}, result
    assert client.llen(key) == 0


def broker_keys(broker: PrivateRedis, prefix: str) -> dict[str, int]:
    """What the private broker holds now: each key with its length (for a failure's message)."""
    client = redis.Redis(port=broker.port, socket_timeout=5, decode_responses=True)
    sizes: dict[str, int] = {}
    for name in client.keys(f"{prefix}*"):
        kind = client.type(name)
        size = {"list": client.llen, "hash": client.hlen, "zset": client.zcard}.get(str(kind))
        sizes[str(name)] = int(size(name)) if size else -1
    return sizes


class PrivateRedis:
    """A `redis-server` of the test's own on a loopback port, which it can stop and start."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            "redis-server",
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if b"Ready to accept connections" in line:
                return
        raise AssertionError(f"redis-server did not start (exit {self.process.wait()})")

    def shut_down(self) -> None:
        """Stop the server as a restart does: SHUTDOWN SAVE (what is queued is kept)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as conn:
            conn.sendall(b"SHUTDOWN SAVE\r\n")  # redis-py would retry the closed connection
            assert conn.recv(64) == b"", "SHUTDOWN refused"
        self.stop()

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
            self.process.wait(10)
            assert self.process.stdout is not None
            self.process.stdout.close()
            self.process = None


def test_redis_restarted_while_requests_flow(celery_session: Session, tmp_path: Path) -> None:
    requests = scale(600, 20_000)
    queue, key = f"{celery_session.queue}-restart", celery_session.key()
    client = celery_session.client()
    broker = PrivateRedis(tmp_path)
    broker.start()
    log = tmp_path / "worker.log"
    worker = start_worker(celery_session, log, queue=queue, broker=broker.url, visibility=3)
    try:
        with web(celery_session, queue, broker=broker.url) as server:
            with server.loading(path(key), requests, 10, by_request=True) as load:
                server.output.wait_for(requests // 4, "handled ")  # requests are flowing
                records = take(client, key, 30)  # and so are tasks
                broker.shut_down()
                server.output.wait_for(1, NOT_QUEUED)  # requests are refused meanwhile
                broker.start()
                out, _ = load.communicate(timeout=300)
            result = json.loads(out)
            groups = by_status(result)
            after = server.load(path(key), 100, 10, start=requests)
            answered = groups[200] + [str(n) for n in range(requests, requests + 100)]
            wanted = {f"{n}:{i}" for n in answered for i in range(3)}
            lost: list[str] = []
            broker_state: object = None
            while not wanted <= set(records):  # re-deliveries come after the visibility timeout
                late = client.blpop([key], timeout=TIMEOUT)
                if late is None:
                    lost = sorted(wanted - set(records))
                    broker_state = broker_keys(broker, celery_session.prefix)
                    break
                records.append(str(late[1]))
            records += take_until(client, key, queue_last(server, key))
            server.terminate()
            server.process.wait(30)
            server.output.wait_for(1, "<eof>")
    finally:
        worker.stop()
        broker.stop()
    lost_requests = {item.split(":")[0] for item in lost}
    counts, duplicates = check_records(records, [n for n in answered if n not in lost_requests])
    named = [line for line in server.output.lines if NOT_QUEUED in line]
    partly = [line for line in named if PARTLY in line]
    said_queued = sum(line.split(PARTLY)[1].count("celery_tasks.") for line in partly)
    refused_ran = [i for n in groups[503] for i in range(3) if counts[f"{n}:{i}"]]
    figure(
        "celery-redis-restart",
        "celery",
        requests=requests,
        statuses=result["statuses"],
        no_answer=result["errors"],
        tasks_of_2xx_executed=sum(counts[f"{n}:{i}"] for n in groups[200] for i in range(3)),
        duplicates=duplicates,
        refused_503_logged=len(named),
        logged_as_partly_queued=len(partly),
        logged_as_queued_before_the_failure=said_queued,
        tasks_of_503_that_ran=len(refused_ran),
        their_index_in_the_request=dict(sorted(collections.Counter(refused_ran).items())),
        after_restart=after["statuses"],
        lost_in_delivery=lost,
    )
    # Redis is not a broker with acknowledgements: kombu's Redis transport takes a message off
    # the queue (BRPOP) and records it as unacknowledged in a second command; a message between
    # the two when Redis stops is gone (celery/kombu#305, celery/celery#4354). So at most the
    # one message in delivery at that instant may be lost (seen once in about twenty runs);
    # more than that is a defect. docs/scaling.md says so, and names RabbitMQ for the rest.
    assert len(lost) <= 1, f"never ran: {lost}; in the broker: {broker_state}"
    assert set(groups) <= {200, 503}, result["statuses"]
    assert result["errors"] == 0
    assert groups[503], "the broker's outage refused no request: it was not seen"
    assert len(named) == len(groups[503])
    assert len(refused_ran) >= said_queued  # those said to be queued did run
    for line in named:  # each names the request's three tasks: not queued, or queued
        assert NAMES in line or (" of 3 background task(s)" in line and PARTLY in line), line
    assert after["statuses"] == {"200": 100}, after
    assert client.llen(key) == 0
