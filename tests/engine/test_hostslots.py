"""Per-host slots: caps across jobs, pacing, forgetting idle hosts, cancelled waiters."""

from __future__ import annotations

import asyncio
import time

import httpx

from jobs.engine.hostslots import HostSlots
from jobs.engine.pipeline import fetch_all
from jobs.engine.values import FetchOptions, FetchResult
from tests.target import TargetServer


async def test_per_host_cap_holds_across_jobs(target: TargetServer, client: httpx.AsyncClient) -> None:
    hosts = HostSlots()
    options = FetchOptions(timeout=5, per_host=3)
    results: list[FetchResult] = []
    jobs = [
        fetch_all(client, [(i, target.url("/delay/100")) for i in range(12)], concurrency=10, options=options,
                  on_result=results.append, hosts=hosts)
        for _ in range(2)
    ]  # fmt: skip
    await asyncio.gather(*jobs)

    assert len(results) == 24 and all(r.outcome == "succeeded" for r in results)
    assert target.stats().peak_in_flight == 3
    assert hosts.in_flight(target.base_url.removeprefix("http://")) == 0  # keyed by host and port


async def test_host_delay_spaces_requests(target: TargetServer, client: httpx.AsyncClient) -> None:
    options = FetchOptions(timeout=5, per_host=8, host_delay=0.2)
    finished: list[float] = []
    started = time.monotonic()
    await fetch_all(client, [(i, target.url("/ok")) for i in range(5)], concurrency=5, options=options,
                    on_result=lambda r: finished.append(time.monotonic() - started), hosts=HostSlots())  # fmt: skip

    assert len(finished) == 5
    assert max(finished) >= 0.8  # starts at 0, 0.2, 0.4, 0.6, 0.8 s


async def test_host_slots_forget_idle_hosts(target: TargetServer, client: httpx.AsyncClient) -> None:
    hosts = HostSlots()
    options = FetchOptions(timeout=5, host_delay=2)
    await fetch_all(client, [(0, target.url("/ok"))], concurrency=1, options=options, on_result=lambda r: None,
                    hosts=hosts)  # fmt: skip
    assert target.base_url.removeprefix("http://") in hosts._hosts  # its pacing still applies for 2 s after the request started
    await asyncio.sleep(2.3)
    assert hosts._hosts == {}


async def test_a_cancelled_host_waiter_leaks_no_slot() -> None:
    hosts = HostSlots()
    order: list[str] = []

    async def use(name: str, hold: float) -> None:
        async with hosts.hold("h", limit=1):
            order.append(name)
            await asyncio.sleep(hold)

    first = asyncio.create_task(use("first", 0.1))
    await asyncio.sleep(0.01)
    cancelled = asyncio.create_task(use("cancelled", 0))
    last = asyncio.create_task(use("last", 0))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    await asyncio.gather(first, last)
    assert cancelled.cancelled() and order == ["first", "last"]
    assert hosts.in_flight("h") == 0 and hosts._hosts == {}
