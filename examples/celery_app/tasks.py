"""The task functions: plain functions, registered with afterward by `@afterward.task`.

They run on the Celery worker. Delivery is at-least-once, so each one is written to be safe to
run twice: sending the same welcome email twice is avoided with a Redis `SET NX` marker.
"""

from __future__ import annotations

import logging

import redis.asyncio
from redis import Redis

import afterward

from .worker import REDIS_URL

logger = logging.getLogger(__name__)


@afterward.task(retries=3, backoff=1.0)
def send_welcome_email(email: str) -> None:
    """Send the welcome email, once per address even if the task runs twice."""
    client = Redis.from_url(REDIS_URL)
    if not client.set(f"celery_app:welcomed:{email}", "1", nx=True, ex=86_400):
        logger.info("The welcome email to %s was already sent", email)
        return
    logger.info("Sending the welcome email to %s", email)  # a real app calls its mail API here
    client.rpush(f"celery_app:outbox:{email}", "welcome")


@afterward.task(retries=2, backoff=0.5, timeout=10)
async def update_crm(email: str, plan: str) -> None:
    """Tell the CRM about the new customer (an async function: the worker runs it on a loop)."""
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        logger.info("Recording %s on the %s plan in the CRM", email, plan)
        await client.rpush(f"celery_app:crm:{email}", plan)
    finally:
        await client.aclose()
