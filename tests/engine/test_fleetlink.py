"""FleetSlots' link to Redis: bounded calls, background bookkeeping, the outage state logged once."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.exceptions

from jobs.engine.fleetlink import REDIS_ERRORS, FleetLink, redis_client


async def test_the_client_has_no_socket_timeout_and_no_retries() -> None:
    client = redis_client("redis://127.0.0.1:1/0", timeout=0.5)
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] is None  # see FleetLink.call: redis-py's would swallow cancellations
        assert kwargs["socket_connect_timeout"] == 0.5
        assert kwargs["retry"].get_retries() == 0
    finally:
        await client.aclose()


async def test_a_call_is_bounded_and_its_timeout_counts_as_redis_unreachable() -> None:
    link = FleetLink(redis_client("redis://127.0.0.1:1/0"), timeout=0.05)
    with pytest.raises(REDIS_ERRORS):
        await link.call(asyncio.sleep(5))
    assert await link.call(asyncio.sleep(0, result="answer")) == "answer"
    await link.redis.aclose()


async def test_failed_bookkeeping_degrades_once_and_a_restore_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="jobs.engine.fleetlink")
    link = FleetLink(redis_client("redis://127.0.0.1:1/0"))

    async def refused() -> None:
        raise redis.exceptions.ConnectionError("refused")

    for _ in range(3):
        link.spawn(refused())
    await link.settle()
    assert link.degraded and link.pending == []
    link.restore()
    assert not link.degraded
    messages = [record.getMessage() for record in caplog.records]
    assert sum("Redis unreachable" in m for m in messages) == 1, messages
    assert sum("Redis reachable again" in m for m in messages) == 1, messages
    await link.redis.aclose()
