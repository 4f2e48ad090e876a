"""Real Celery workers and a real Redis for the Celery tests: find Redis, start and kill workers.

The tests need a Redis server at `AFTERWARD_TEST_REDIS` (default `redis://127.0.0.1:6379/0`).
Without one they skip, saying how to start one; with `AFTERWARD_REQUIRE_REDIS=1` (CI sets it)
they fail instead, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

APPS = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("AFTERWARD_TEST_REDIS", "redis://127.0.0.1:6379/0")
TIMEOUT = 30.0

HOW_TO_ENABLE = (
    "no Redis server answers at {url}, so the Celery tests cannot run. Start one (e.g. "
    "`redis-server --port 6379 --bind 127.0.0.1 --save ''`, or `docker run -p 6379:6379 "
    "redis`), or point AFTERWARD_TEST_REDIS at one."
)


def redis_answers(url: str = REDIS_URL, timeout: float = 1.0) -> bool:
    """Whether a Redis server answers PING at `url`."""
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 6379), timeout=timeout
        ) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def require_redis() -> str:
    """Return the Redis URL, or skip (fail, under `AFTERWARD_REQUIRE_REDIS=1`) without one."""
    if redis_answers():
        return REDIS_URL
    message = HOW_TO_ENABLE.format(url=REDIS_URL)
    if os.environ.get("AFTERWARD_REQUIRE_REDIS") == "1":
        pytest.fail(f"AFTERWARD_REQUIRE_REDIS=1, but {message}", pytrace=False)
    pytest.skip(message)


@dataclass
class Session:
    """Where one test session's messages and records live in Redis."""

    url: str
    prefix: str
    queue: str

    def env(
        self, *, visibility: float = 3600.0, queue: str | None = None, broker: str | None = None
    ) -> dict[str, str]:
        """The environment of a worker for this session (on Redis, unless `broker` is given)."""
        return {
            "AFTERWARD_TEST_BROKER": broker or self.url,
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(APPS), *sys.path]),
            "AFTERWARD_TEST_REDIS": self.url,
            "AFTERWARD_TEST_PREFIX": self.prefix,
            "AFTERWARD_TEST_QUEUE": queue or self.queue,
            "AFTERWARD_TEST_VISIBILITY": str(visibility),
        }

    def client(self) -> redis.Redis:
        """A Redis client for the session's records (its socket outwaits `take`'s BLPOP: the
        default of redis-py's `from_url` is 5 s, which cut every longer wait short)."""
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=TIMEOUT + 10)

    def key(self) -> str:
        """A new list key for one test's records."""
        return f"{self.prefix}records:{uuid.uuid4().hex[:8]}"

    def cleanup(self) -> None:
        """Delete every key of the session."""
        client = self.client()
        keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture(scope="session")
def celery_session() -> Iterator[Session]:
    """A Redis key prefix and queue of this test session's own (deleted at the end)."""
    url = require_redis()
    token = uuid.uuid4().hex[:10]
    session = Session(url, f"afterward-test-{token}:", f"afterward-test-{token}")
    try:
        yield session
    finally:
        session.cleanup()


class Worker:
    """A real `celery -A celery_tasks worker` process (solo pool), logging to a file."""

    def __init__(self, env: dict[str, str], log: Path, queue: str) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "celery_tasks",
                "worker",
                "--pool=solo",
                "--queues",
                queue,
                "--hostname",
                f"afterward-test-{uuid.uuid4().hex[:6]}@%h",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "--loglevel=INFO",
            ],
            cwd=APPS,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        """What the worker has logged so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        """SIGKILL the worker, as an out-of-memory killer or a lost machine would."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(TIMEOUT)

    def stop(self) -> None:
        """Stop the worker (warm shutdown), killing it if it does not stop in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def start_worker(
    session: Session,
    log: Path,
    *,
    visibility: float = 3600.0,
    queue: str | None = None,
    broker: str | None = None,
) -> Worker:
    """Start a worker for `session` (its own `queue` and `broker` if given), logging to `log`."""
    env = session.env(visibility=visibility, queue=queue, broker=broker)
    return Worker(env, log, queue or session.queue)


@pytest.fixture(scope="session")
def celery_worker(
    celery_session: Session, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """One worker for the session's queue, shared by the tests that need one."""
    worker = start_worker(celery_session, tmp_path_factory.mktemp("celery") / "worker.log")
    try:
        yield worker
    finally:
        worker.stop()


def take(client: redis.Redis, key: str, count: int, timeout: float = TIMEOUT) -> list[str]:
    """Pop `count` records from the list `key`, waiting for them (BLPOP, no polling)."""
    taken: list[str] = []
    while len(taken) < count:
        item = client.blpop([key], timeout=timeout)
        if item is None:
            raise AssertionError(f"only {len(taken)} of {count} records arrived: {taken}")
        taken.append(str(item[1]))
    return taken
