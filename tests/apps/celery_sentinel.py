"""A module no worker imports: importing it leaves a mark in Redis, which must never appear.

A forged message names `celery_sentinel:mark`; the worker must refuse it without importing this.
"""

from __future__ import annotations

import os

import redis

redis.Redis.from_url(os.environ.get("AFTERWARD_TEST_REDIS", "redis://127.0.0.1:6379/0")).set(
    os.environ.get("AFTERWARD_TEST_PREFIX", "afterward-test:") + "sentinel-imported", "1"
)


def mark() -> None:
    """Never run."""
