"""FleetSlots' link to Redis: the client it needs, bounded calls, bookkeeping sent in the background, and
whether Redis is reachable (degraded: the per-worker caps apply; logged once per outage)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

logger = logging.getLogger(__name__)
T = TypeVar("T")

CALL_TIMEOUT = 2.0
"""Seconds one Redis call may take before Redis counts as unreachable (the per-worker caps apply)."""
POOL_SIZE = 32
"""Redis connections of a worker's slots at most (further calls wait for one)."""
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)


def redis_client(url: str, *, timeout: float = CALL_TIMEOUT, pool_size: int = POOL_SIZE) -> aioredis.Redis:
    """The client FleetSlots needs: no retries (an outage is met by the fallback) and no socket_timeout.

    `FleetLink.call` bounds every call instead; see there why. `aclose()` closes its pool too.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=timeout,  # waiting for one of the pool's connections
        socket_timeout=None,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return aioredis.Redis.from_pool(pool)


class FleetLink:
    """One worker's Redis client for its host slots, and what is known of Redis's health."""

    def __init__(self, client: aioredis.Redis, *, timeout: float = CALL_TIMEOUT) -> None:
        self.redis = client
        self._timeout = timeout
        self._tasks: set[asyncio.Task[Any]] = set()
        self.degraded = False
        """True while Redis is unreachable."""

    async def call(self, request: Awaitable[T]) -> T:
        """One Redis call, bounded by `timeout`: a TimeoutError (an OSError) counts as Redis unreachable.

        Bounded here rather than by redis-py's `socket_timeout`, which the client
        must not have: redis-py runs each send under `asyncio.wait_for`, and on
        Python 3.11 that swallows a cancellation arriving as the send completes
        (CPython gh-86296), so a cancelled waiter would go on and take a slot.
        """
        async with asyncio.timeout(self._timeout):
            return await request

    def spawn(self, awaitable: Awaitable[Any]) -> None:
        """Run a piece of Redis bookkeeping in the background (awaited by `settle`; a Redis error degrades)."""
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    @property
    def pending(self) -> list[asyncio.Task[Any]]:
        return list(self._tasks)

    async def settle(self) -> None:
        """Wait for the bookkeeping sent in the background so far to reach Redis."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def degrade(self, exc: BaseException) -> None:
        if not self.degraded:
            self.degraded = True
            logger.warning(
                "Redis unreachable (%s): per-host caps now hold per worker only, until it answers again", exc
            )

    def restore(self) -> None:
        self.degraded = False
        logger.warning("Redis reachable again: per-host caps hold across all workers again")

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            if isinstance(exc, REDIS_ERRORS):
                self.degrade(exc)
            else:
                logger.error("Host-slot bookkeeping failed", exc_info=exc)
