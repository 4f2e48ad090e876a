"""The Celery app and task functions the Celery tests run in real worker processes.

The worker is started with `celery -A celery_tasks worker` (see `celery_worker.py`), configured by
environment variables so that each test session has its own Redis key prefix and queue. Every
task records what it did in a Redis list, the test's evidence of each execution.
"""

from __future__ import annotations

import os
import time

import anyio
import redis
import redis.asyncio
from celery import Celery
from kombu.entity import Exchange, Queue

import afterward
import afterward.celery

REDIS_URL = os.environ.get("AFTERWARD_TEST_REDIS", "redis://127.0.0.1:6379/0")
BROKER_URL = os.environ.get("AFTERWARD_TEST_BROKER", REDIS_URL)  # RabbitMQ: amqp://...
PREFIX = os.environ.get("AFTERWARD_TEST_PREFIX", "afterward-test:")
QUEUE = os.environ.get("AFTERWARD_TEST_QUEUE", "afterward-test")
VISIBILITY = float(os.environ.get("AFTERWARD_TEST_VISIBILITY", "3600"))


def make_app(
    broker: str = BROKER_URL,
    *,
    prefix: str = PREFIX,
    queue: str = QUEUE,
    visibility: float = VISIBILITY,
) -> Celery:
    """A Celery app configured like the workers' (the web side of a test makes its own).

    Its keys in Redis all start with `prefix`, so test sessions never see each other's
    messages, and abandoned messages are looked for every second (re-delivered once unacknowledged
    for `visibility` seconds).
    """
    celery_app = Celery("celery_tasks", broker=broker)
    celery_app.conf.update(
        task_default_queue=queue,
        broker_transport_options={
            "global_keyprefix": prefix,
            "visibility_timeout": visibility,
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        worker_prefetch_multiplier=1,
    )
    if broker.startswith("amqp"):
        # A RabbitMQ queue outlives its consumers: this one deletes itself a minute after the
        # test session stops using it.
        celery_app.conf.task_queues = [
            Queue(queue, Exchange(queue), routing_key=queue, queue_arguments={"x-expires": 60_000})  # type: ignore[no-untyped-call]
        ]
    return celery_app


app = make_app()
afterward.celery.register(app)


def _redis() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


@afterward.task
def record(key: str, value: str) -> None:
    """Record `value` in the list `key`."""
    _redis().rpush(key, value)


@afterward.task
async def arecord(key: str, value: str) -> None:
    """Record `value` in the list `key`, from an async function on the worker's event loop."""
    await anyio.sleep(0)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await client.rpush(key, value)
    finally:
        await client.aclose()


def _attempt(key: str, value: str) -> int:
    return int(_redis().incr(f"{key}:attempts:{value}"))


@afterward.task(retries=2, backoff=0.05, jitter=False)
def flaky(key: str, value: str, failures: int) -> None:
    """Fail the first `failures` attempts, then record `value`."""
    if _attempt(key, value) <= failures:
        raise RuntimeError(f"attempt of {value} failing on purpose")
    _redis().rpush(key, value)


@afterward.task(retries=1, backoff=0.05, jitter=False)
async def aflaky(key: str, value: str) -> None:
    """Fail the first attempt, then record `value` (async)."""
    if _attempt(key, value) == 1:
        raise RuntimeError(f"attempt of {value} failing on purpose")
    await arecord(key, value)


@afterward.task(retries=1, timeout=0.5)
async def hangs_once(key: str, value: str) -> None:
    """Hang past the timeout on the first attempt, record `value` on the second."""
    if _attempt(key, value) == 1:
        await anyio.sleep(60)
    await arecord(key, value)


@afterward.task
def stalls_first(key: str, value: str) -> None:
    """Say it started, then stall on the first delivery (the test kills the worker there)."""
    if _attempt(key, value) == 1:
        _redis().rpush(f"{key}:started", value)
        time.sleep(120)
    _redis().rpush(key, value)


def plain(key: str, value: str) -> None:
    """A function registered with `register_task` rather than decorated."""
    _redis().rpush(key, value)


afterward.celery.register_task(plain)


def unregistered(key: str, value: str) -> None:
    """A module-level function nobody registered: a worker must refuse to run it."""
    _redis().rpush(key, value)
