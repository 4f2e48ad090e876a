"""examples/celery_app: the two documented commands, a real Redis, a signup, the tasks done."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent / "apps"))

from celery_worker import TIMEOUT, require_redis, take

from test_celery_worker import free_port

pytestmark = pytest.mark.celery

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def config_dir(tmp_path: Path) -> Iterator[Path]:
    """A Celery config module giving the example a queue and Redis keys of its own."""
    token = uuid.uuid4().hex[:10]
    (tmp_path / "example_celeryconfig.py").write_text(
        f"task_default_queue = 'example-{token}'\n"
        f"broker_transport_options = {{'global_keyprefix': 'example-{token}:'}}\n",
        encoding="utf-8",
    )
    yield tmp_path
    client = redis.Redis.from_url(require_redis())
    keys = list(client.scan_iter(match=f"example-{token}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()


def test_the_example_app_sends_signups_to_the_worker(
    config_dir: Path, started: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    redis_url = require_redis()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(config_dir)]),
        "CELERY_CONFIG_MODULE": "example_celeryconfig",
    }
    log = (tmp_path / "worker.log").open("wb")
    # The two commands of docs/scaling.md (with python -m, and a port of the test's own).
    started.append(
        subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "examples.celery_app.worker", "worker"),
                *("--loglevel=INFO", "--pool=solo", "--without-mingle", "--without-gossip"),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    )
    port = free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.celery_app.web:app", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    started.append(web)
    assert web.stdout is not None
    for line in web.stdout:
        if b"Uvicorn running on" in line:
            break
    else:
        raise AssertionError(f"uvicorn did not start (exit code {web.wait()})")

    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as http:
            for plan in ("pro", "team"):  # the same signup twice: one welcome email
                response = http.post("/signup", json={"email": email, "plan": plan})
                assert response.status_code == 201
                assert response.json() == {"welcome": email}
        assert take(client, f"celery_app:crm:{email}", 2) == ["pro", "team"]
        assert take(client, f"celery_app:outbox:{email}", 1) == ["welcome"]
        assert client.llen(f"celery_app:outbox:{email}") == 0  # the second ran before the CRM's
        worker_log = (tmp_path / "worker.log").read_text()
        assert f"The welcome email to {email} was already sent" in worker_log
        assert ".> example-" in worker_log  # the queue of the config module, not "celery"
    finally:
        client.delete(f"celery_app:welcomed:{email}")
        log.close()
