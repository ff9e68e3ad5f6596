"""Shared per-host rate on Redis: the `limits` library against FleetSlots' own GCRA, measured.

    python -m bench.ratelimit [--redis redis://127.0.0.1:6379/0] [--n 2000]

Prints, for each: the mean round-trip cost of one request's rate check (one
coroutine, so latency, not throughput), and how evenly 40 requests at 8/s
from 4 concurrent callers are spread (largest count in any 1 s window, total
time). `limits` only answers "allowed now or not" (`hit`), so its callers
must poll: the poll interval trades latency against Redis load. FleetSlots'
GCRA reserves the start time inside the slot's acquire script, so a caller
sleeps exactly until its turn and pays no extra round trip (the row "slot +
GCRA" is the whole acquire + release of a slot; "slot only" the same without
a rate).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from jobs.engine.fleetslots import FleetSlots

POLL = 0.01


async def timed(n: int, call: Callable[[], Awaitable[object]]) -> float:
    """Mean milliseconds per call of `n` sequential calls."""
    started = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - started) * 1000 / n


def worst_window(starts: list[float]) -> int:
    starts = sorted(starts)
    return max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts)


async def spread(take: Callable[[], Awaitable[None]]) -> tuple[int, float]:
    """4 callers × 10 requests through `take`: (most starts in any 1 s window, seconds overall)."""
    starts: list[float] = []

    async def caller() -> None:
        for _ in range(10):
            await take()
            starts.append(time.monotonic())

    began = time.monotonic()
    await asyncio.gather(*(caller() for _ in range(4)))
    return worst_window(starts), time.monotonic() - began


async def main(url: str, n: int) -> None:
    storage = RedisStorage(url.replace("redis://", "async+redis://"), implementation="redispy")
    client = aioredis.Redis.from_url(url)
    rows: list[tuple[str, float, int, float]] = []
    for name, strategy in (
        ("limits moving window", MovingWindowRateLimiter),
        ("limits sliding counter", SlidingWindowCounterRateLimiter),
    ):
        limiter = strategy(storage)
        fast = RateLimitItemPerSecond(10**9)
        key = secrets.token_hex(4)
        cost = await timed(n, lambda limiter=limiter, key=key, fast=fast: limiter.hit(fast, key))  # type: ignore[misc]
        rate = RateLimitItemPerSecond(8)
        key = secrets.token_hex(4)

        async def take(limiter: object = limiter, key: str = key, rate: object = rate) -> None:
            while not await limiter.hit(rate, key):  # type: ignore[attr-defined]
                await asyncio.sleep(POLL)

        window, total = await spread(take)
        rows.append((name, cost, window, total))
    async with FleetSlots(client, owner="bench", lease=30, prefix=f"bench:{secrets.token_hex(4)}") as slots:
        host = "bench.test:80"

        async def slot_only() -> None:
            await slots.acquire(host, limit=8)
            slots.release(host)

        async def slot_rated() -> None:
            await slots.acquire(host, limit=8, rate=10.0**6)
            slots.release(host)

        only = await timed(n, slot_only)
        both = await timed(n, slot_rated)

        async def take_gcra() -> None:
            await slots.acquire(host + "x", limit=8, rate=8.0)
            slots.release(host + "x")

        window, total = await spread(take_gcra)
        rows.append(("FleetSlots slot only", only, 0, 0.0))
        rows.append(("FleetSlots slot + GCRA", both, window, total))
    await client.aclose()
    print(f"{'':26} {'ms/check':>9} {'max/1s':>7} {'40 @ 8/s':>9}")
    for name, cost, window, total in rows:
        print(f"{name:26} {cost:9.3f} {window or '':>7} {f'{total:.2f} s' if total else '':>9}")
    print(f"(limits polls every {POLL * 1000:g} ms while refused; FleetSlots' rate check rides on the slot's script)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.redis, args.n))
