"""FleetSlots on a real Redis: several instances stand for several workers (one process, one loop).

The process-level proofs (real `runworker`s, a loopback target) are in
test_politeness.py; these pin the mechanics: the cap, leases, pace, pause,
the adaptive limit and the fallback during an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from jobs.engine.fleethost import HANDOFF_MAX, KEEP_SECONDS
from jobs.engine.fleetscripts import host_keys
from jobs.engine.fleetlink import redis_client
from jobs.engine.fleetslots import FleetSlots
from tests import services

HOST = "example.test:80"


@pytest.fixture
def prefix() -> str:
    return f"test:{secrets.token_hex(4)}"


@contextlib.asynccontextmanager
async def fleet(url: str, prefix: str, n: int) -> AsyncIterator[list[FleetSlots]]:
    """`n` FleetSlots on one Redis, as `n` workers would have (each its own client)."""
    clients = [redis_client(url) for _ in range(n)]
    try:
        async with contextlib.AsyncExitStack() as stack:
            workers = [
                await stack.enter_async_context(FleetSlots(client, owner=f"w{i}", lease=5.0, prefix=prefix))
                for i, client in enumerate(clients)
            ]
            yield workers
    finally:
        for client in clients:
            await client.aclose()


class Peak:
    def __init__(self) -> None:
        self.now = self.peak = 0

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            yield
        finally:
            self.now -= 1

    async def request(self, slots: FleetSlots, *, limit: int, seconds: float) -> None:
        """One request to HOST through `slots`, counted while it holds its slot."""
        await slots.acquire(HOST, limit=limit)
        try:
            with self.inside():
                await asyncio.sleep(seconds)
        finally:
            slots.release(HOST)


async def test_the_cap_holds_across_instances_and_is_reached(redis_url: str, prefix: str) -> None:
    peak = Peak()
    async with fleet(redis_url, prefix, 3) as workers:
        started = time.monotonic()
        await asyncio.gather(*(peak.request(w, limit=4, seconds=0.02) for w in workers for _ in range(20)))
        elapsed = time.monotonic() - started
    assert peak.peak == 4
    # 60 requests of 20 ms, 4 at a time: ~0.3 s when waiters are woken promptly (a 0.5 s re-check would show).
    assert elapsed < 1.5, elapsed


async def test_a_killed_holders_slots_come_back_after_the_lease(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        dead = FleetSlots(client, owner="dead", lease=1.0, prefix=prefix)  # never entered: renews nothing
        for _ in range(2):
            await dead.acquire(HOST, limit=2)  # and never released: as if SIGKILLed
        async with FleetSlots(client, owner="alive", lease=5.0, prefix=prefix) as alive:
            started = time.monotonic()
            await asyncio.wait_for(alive.acquire(HOST, limit=2), timeout=5)
            waited = time.monotonic() - started
            assert 0.6 < waited < 2.0, waited
            assert await client.zcard(host_keys(HOST, prefix)["hold"]) == 1  # the dead ones are gone, not doubled
            alive.release(HOST)
    finally:
        await client.aclose()


async def test_leases_of_long_requests_are_renewed(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with FleetSlots(client, owner="a", lease=1.0, renew_every=0.2, prefix=prefix) as slots:
            await slots.acquire(HOST, limit=1)
            await asyncio.sleep(1.5)  # longer than the lease
            assert await client.zcard(host_keys(HOST, prefix)["hold"]) == 1
            slots.release(HOST)
    finally:
        await client.aclose()


async def test_the_rate_spaces_starts_across_instances(redis_url: str, prefix: str) -> None:
    starts: list[float] = []
    async with fleet(redis_url, prefix, 2) as workers:

        async def request(slots: FleetSlots) -> None:
            await slots.acquire(HOST, limit=8, rate=20.0)
            starts.append(time.monotonic())
            slots.release(HOST)

        await asyncio.gather(*(request(w) for w in workers for _ in range(10)))
    starts.sort()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # Scheduled 1/20 s apart; measured after the wake-up, so a late one shortens the next gap (a loaded machine).
    assert sorted(gaps)[len(gaps) // 2] > 0.045, gaps
    assert 0.9 < starts[-1] - starts[0] < 2.0  # 19 gaps of 50 ms, whichever instance took them


async def test_a_retry_after_seen_by_one_pauses_the_host_for_all(redis_url: str, prefix: str) -> None:
    async with fleet(redis_url, prefix, 2) as (one, other):
        await one.acquire(HOST, limit=4)
        one.observe(HOST, status=429, latency=0.01, retry_after=1.0, per_host=4, adaptive=False)
        one.release(HOST)
        await one.settle()  # observe reaches Redis in the background
        started = time.monotonic()
        await other.acquire(HOST, limit=4)
        waited = time.monotonic() - started
        other.release(HOST)
    assert 0.85 < waited < 1.5, waited


async def test_autothrottle_grows_with_fast_answers_halves_on_429_and_stays_within_1_and_per_host(
    redis_url: str, prefix: str
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    state = host_keys(HOST, prefix)["state"]
    try:
        async with FleetSlots(client, owner="a", lease=5.0, prefix=prefix) as slots:

            async def limit() -> float:
                await slots.settle()
                return float(await client.hget(state, "limit") or 0)

            for _ in range(60):
                slots.observe(HOST, status=200, latency=0.02, per_host=6, adaptive=True)
            assert await limit() == 6  # grown to per_host, not beyond
            slots.observe(HOST, status=429, latency=0.02, per_host=6, adaptive=True)
            assert await limit() == 3
            for _ in range(10):
                slots.observe(HOST, status=503, latency=0.02, per_host=6, adaptive=True)
            assert await limit() == 1  # never below 1
            for _ in range(5):
                slots.observe(HOST, status=200, latency=0.5, per_host=6, adaptive=True)  # far slower than the floor
            assert await limit() == 1
            # The adaptive limit caps acquires: one in flight at a time now.
            await slots.acquire(HOST, limit=6, adaptive=True)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(slots.acquire(HOST, limit=6, adaptive=True), timeout=0.3)
            slots.release(HOST)
    finally:
        await client.aclose()


async def test_redis_down_falls_back_to_per_worker_caps_logs_once_and_resumes(
    tmp_path: Path, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = services.free_port()
    url = f"redis://127.0.0.1:{port}/0"
    caplog.set_level(logging.WARNING, logger="jobs.engine.fleetlink")
    client = redis_client(url, timeout=0.5)
    peak = Peak()
    try:
        async with FleetSlots(client, owner="a", lease=5.0, prefix=prefix, timeout=0.5) as slots:
            # No Redis at all: the local cap holds.
            await asyncio.gather(*(peak.request(slots, limit=3, seconds=0.01) for _ in range(30)))
            assert slots.degraded and peak.peak == 3
            redis_process = await asyncio.to_thread(services.start_redis, port=port, workdir=tmp_path / "redis")
            try:
                for _ in range(50):
                    if not slots.degraded:
                        break
                    await asyncio.sleep(0.1)
                assert not slots.degraded
                await slots.acquire(HOST, limit=3)
                assert await client.zcard(host_keys(HOST, prefix)["hold"]) == 1  # counted in Redis again
                slots.release(HOST)
                await asyncio.sleep(KEEP_SECONDS * 2)  # kept for a next request here, then given back
                await slots.settle()  # the release reaches Redis
                assert await client.zcard(host_keys(HOST, prefix)["hold"]) == 0
                messages = [r.getMessage() for r in caplog.records]
            finally:
                redis_process.stop()
    finally:
        await client.aclose()
    assert sum("Redis unreachable" in m for m in messages) == 1, messages
    assert sum("Redis reachable again" in m for m in messages) == 1, messages


async def test_a_release_hands_its_slot_to_a_waiter_here_but_lets_other_workers_have_their_turn(
    redis_url: str, prefix: str
) -> None:
    hold = host_keys(HOST, prefix)["hold"]
    async with fleet(redis_url, prefix, 2) as (busy, other):
        order: list[str] = []

        async def request(slots: FleetSlots, name: str) -> None:
            await slots.acquire(HOST, limit=1)
            try:
                order.append(name)
                await asyncio.sleep(0.02)  # HANDOFF_MAX hand-overs outlast the 0.05 s before the other one asks
            finally:
                slots.release(HOST)

        first = asyncio.create_task(request(busy, "busy"))
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(request(busy, "busy")) for _ in range(3 * HANDOFF_MAX)]
        await asyncio.sleep(0.05)
        theirs = asyncio.create_task(request(other, "other"))
        await asyncio.gather(first, *queued, theirs)
        assert await busy.redis.zcard(hold) == 0
    assert order.count("busy") == 3 * HANDOFF_MAX + 1
    # Hand-overs keep the slot in the busy worker, but at most HANDOFF_MAX in a row: the other one got in early.
    assert order.index("other") <= 2 * HANDOFF_MAX + 1, order


async def test_a_pause_seen_elsewhere_stops_hand_overs_here(redis_url: str, prefix: str) -> None:
    async with fleet(redis_url, prefix, 2) as (one, other):
        await other.acquire(HOST, limit=1)
        waiter = asyncio.create_task(other.acquire(HOST, limit=1))  # the same kind: a release would hand over
        await asyncio.sleep(0.05)
        one.observe(HOST, status=429, latency=0.01, retry_after=1.0, per_host=1, adaptive=False)
        await one.settle()
        await asyncio.sleep(0.05)  # the pause is published to every worker
        paused_at = time.monotonic()
        other.release(HOST)  # would hand the slot over at once, were the host not paused
        await asyncio.wait_for(waiter, timeout=3)
        waited = time.monotonic() - paused_at
        other.release(HOST)
    assert waited > 0.8, waited


async def test_a_cancelled_acquire_never_goes_on_to_hold_a_slot(redis_url: str, prefix: str) -> None:
    # Cancelled at every moment of its Redis round trip (sending, waiting, reading), an acquire either
    # raises CancelledError or had returned before the cancel: it never returns a slot afterwards
    # (with redis-py's socket_timeout, Python 3.11's wait_for swallowed such cancels: the pause hang).
    async with fleet(redis_url, prefix, 1) as [slots]:
        swallowed = 0
        for attempt in range(300):
            task = asyncio.create_task(slots.acquire(HOST, limit=1000))
            await asyncio.sleep((attempt % 30) / 10_000)
            if not task.cancel():
                slots.release(HOST)  # it had its slot before the cancel: fine
                continue
            try:
                await task
            except asyncio.CancelledError:
                continue
            swallowed += 1
            slots.release(HOST)
        await slots.settle()
        assert swallowed == 0
        assert slots.in_flight(HOST) == 0


async def test_a_busy_worker_reuses_its_slots_without_round_trips_and_gives_idle_ones_back(
    redis_url: str, prefix: str
) -> None:
    hold = host_keys(HOST, prefix)["hold"]
    async with fleet(redis_url, prefix, 1) as [slots]:
        calls = 0
        ask = slots.link.call

        async def counted(request):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            return await ask(request)

        slots.link.call = counted  # type: ignore[method-assign]
        peak = Peak()

        async def consumer() -> None:
            for _ in range(50):
                await peak.request(slots, limit=4, seconds=0.001)

        await asyncio.gather(*(consumer() for _ in range(4)))
        assert peak.peak == 4
        assert calls <= 8, calls  # 200 requests: the 4 slots were taken once (and maybe re-taken), not 200 times
        assert await slots.redis.zcard(hold) == 4  # kept, still counted fleet-wide
        await asyncio.sleep(KEEP_SECONDS * 2)
        await slots.settle()
        assert await slots.redis.zcard(hold) == 0  # no request came: given back


async def test_a_worker_finding_the_host_full_gets_the_slots_another_keeps(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("jobs.engine.fleetslots.KEEP_SECONDS", 10.0)  # only the "waiting" news can free them soon
    async with fleet(redis_url, prefix, 2) as (busy, other):
        for _ in range(2):
            await busy.acquire(HOST, limit=2)
        busy.release(HOST)
        busy.release(HOST)  # both kept by `busy`: the host is full in Redis
        started = time.monotonic()
        await asyncio.wait_for(other.acquire(HOST, limit=2), timeout=2)
        assert time.monotonic() - started < 1.0  # given back on the other's "waiting" news
        other.release(HOST)


async def test_fleet_slots_in_flight_when_redis_goes_count_against_the_per_worker_cap(
    tmp_path: Path, prefix: str
) -> None:
    port = services.free_port()
    redis_process = await asyncio.to_thread(services.start_redis, port=port, workdir=tmp_path / "redis")
    client = redis_client(f"redis://127.0.0.1:{port}/0", timeout=0.5)
    try:
        async with FleetSlots(client, owner="a", lease=5.0, prefix=prefix, timeout=0.5) as slots:
            for _ in range(3):
                await slots.acquire(HOST, limit=3)  # three requests in flight on fleet slots
            redis_process.stop()
            late = [asyncio.create_task(slots.acquire(HOST, limit=3)) for _ in range(3)]
            await asyncio.sleep(1.0)
            assert slots.degraded
            assert not any(task.done() for task in late)  # the three in flight still hold this worker's cap
            slots.release(HOST)
            await asyncio.sleep(0.1)
            assert sum(task.done() for task in late) == 1  # one in, one out
            for _ in range(2):
                slots.release(HOST)
            await asyncio.gather(*late)
            assert slots.in_flight(HOST) == 3
            for _ in range(3):
                slots.release(HOST)
            assert slots.in_flight(HOST) == 0
    finally:
        redis_process.stop()
        await client.aclose()
