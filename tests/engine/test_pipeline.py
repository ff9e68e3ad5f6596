"""fetch_all: concurrency bounds (counted on the server), one result per item, stop, cancel, errors, fairness."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable

import httpx
import pytest

from jobs.engine.hostslots import HostSlots
from jobs.engine.pipeline import fetch_all
from jobs.engine.values import FetchOptions, FetchResult
from tests.engine.helpers import until
from tests.target import Stats, TargetServer


async def test_fetch_all_keeps_exactly_concurrency_requests_in_flight(
    target: TargetServer, client: httpx.AsyncClient
) -> None:
    results: list[FetchResult] = []
    items = [(i, target.url(f"/delay/200?i={i}")) for i in range(15)]

    await fetch_all(client, items, concurrency=5, timeout=5, on_result=results.append)

    assert sorted(r.position for r in results) == list(range(15))
    assert {r.outcome for r in results} == {"succeeded"}
    # The server counts a request out after its last write returns, which can be just after the client has it.
    assert await until(target, lambda s: s.in_flight == 0) == Stats(requests=15, in_flight=0, peak_in_flight=5)


async def test_global_limit_caps_concurrent_runs(target: TargetServer, client: httpx.AsyncClient) -> None:
    limit = asyncio.Semaphore(4)
    first: list[FetchResult] = []
    second: list[FetchResult] = []

    def run(name: str, results: list[FetchResult]) -> Awaitable[None]:
        items = [(i, target.url(f"/delay/200?run={name}")) for i in range(8)]
        return fetch_all(client, items, concurrency=5, timeout=5, on_result=results.append, global_limit=limit)

    await asyncio.gather(run("first", first), run("second", second))

    assert sorted(r.position for r in first) == sorted(r.position for r in second) == list(range(8))
    assert await until(target, lambda s: s.in_flight == 0) == Stats(requests=16, in_flight=0, peak_in_flight=4)


async def test_one_result_per_item_from_an_async_iterable(
    target: TargetServer, client: httpx.AsyncClient, refused_url: str
) -> None:
    urls = [target.url("/ok"), target.url("/status/500"), refused_url, "not a url", target.url("/hang")] * 6

    async def pages() -> AsyncIterator[tuple[int, str]]:
        for start in range(0, len(urls), 4):  # like the worker reading pages of pending rows
            await asyncio.sleep(0)
            for position in range(start, min(start + 4, len(urls))):
                yield position, urls[position]

    results: list[FetchResult] = []
    await fetch_all(client, pages(), concurrency=8, timeout=0.3, on_result=results.append)

    assert sorted(r.position for r in results) == list(range(len(urls)))
    errors = [r.error.split(":")[0] for r in sorted(results, key=lambda r: r.position)]
    assert errors[:5] == ["", "http_status", "connect", "invalid_url", "timeout"]
    assert errors == errors[:5] * 6


async def test_cancelling_fetch_all_stops_all_requests(target: TargetServer, client: httpx.AsyncClient) -> None:
    results: list[FetchResult] = []
    endless = ((i, target.url("/hang")) for i in itertools.count())  # only cancellation can end this run
    task = asyncio.create_task(fetch_all(client, endless, concurrency=6, timeout=30, on_result=results.append))
    await until(target, lambda s: s.in_flight == 6)

    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done, "fetch_all did not stop when cancelled"
    with pytest.raises(asyncio.CancelledError):
        await task

    stats = await until(target, lambda s: s.in_flight == 0, timeout=1)
    await asyncio.sleep(0.3)
    assert target.stats() == stats  # no further request arrived
    assert stats.requests == 6 and results == []


async def test_stop_lets_requests_in_flight_finish_and_starts_no_new_one(
    target: TargetServer, client: httpx.AsyncClient
) -> None:
    """A graceful stop: the queued items (and consumers waiting for a global slot) never reach the server."""
    results: list[FetchResult] = []
    stop = asyncio.Event()
    items = [(i, target.url(f"/delay/300?i={i}")) for i in range(20)]
    limit = asyncio.Semaphore(2)  # 4 consumers hold items, 2 of them wait for a slot
    run = asyncio.create_task(
        fetch_all(client, items, concurrency=4, timeout=5, on_result=results.append, global_limit=limit, stop=stop)
    )
    await until(target, lambda s: s.in_flight == 2)

    stop.set()
    await asyncio.wait_for(run, timeout=2)

    assert len(results) == 2 and {r.outcome for r in results} == {"succeeded"}  # in flight: finished, recorded
    await asyncio.sleep(0.3)
    assert (await until(target, lambda s: s.in_flight == 0)).requests == 2


async def test_a_failing_callback_stops_the_run_and_raises(target: TargetServer, client: httpx.AsyncClient) -> None:
    def on_result(result: FetchResult) -> None:
        raise KeyError(result.position)

    items = [(0, target.url("/ok"))] + [(i, target.url("/hang")) for i in range(1, 20)]
    with pytest.raises(KeyError) as excinfo:
        await fetch_all(client, items, concurrency=4, timeout=30, on_result=on_result)

    assert excinfo.value.args == (0,)
    await until(target, lambda s: s.in_flight == 0, timeout=1)  # the other fetches were cancelled


async def test_a_failing_iterable_stops_the_run_and_raises(target: TargetServer, client: httpx.AsyncClient) -> None:
    async def broken() -> AsyncIterator[tuple[int, str]]:
        yield 0, target.url("/hang")
        await until(target, lambda s: s.in_flight == 1)
        raise ConnectionError("database went away")

    with pytest.raises(ConnectionError, match="database went away"):
        await fetch_all(client, broken(), concurrency=2, timeout=30, on_result=lambda r: None)
    await until(target, lambda s: s.in_flight == 0, timeout=1)


async def test_concurrency_must_be_positive(client: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        await fetch_all(client, [], concurrency=0, timeout=1, on_result=lambda r: None)


async def test_a_small_job_is_not_starved_by_a_huge_one(target: TargetServer, client: httpx.AsyncClient) -> None:
    """A 2,000-URL job and a 20-URL job submitted after it, both at the worker's concurrency C."""
    c = 20
    worker = asyncio.Semaphore(c)
    hosts = HostSlots()
    options = FetchOptions(timeout=10, per_host=1000)
    big_done: list[FetchResult] = []
    small_done: list[FetchResult] = []
    url = target.url("/delay/20")

    big = asyncio.create_task(fetch_all(client, [(i, url) for i in range(2000)], concurrency=c, options=options,
                                        on_result=big_done.append, global_limit=worker, hosts=hosts))  # fmt: skip
    while len(big_done) < 100:  # the big job is in full swing
        await asyncio.sleep(0.01)
    await fetch_all(client, [(i, url) for i in range(20)], concurrency=c, options=options,
                    on_result=small_done.append, global_limit=worker, hosts=hosts)  # fmt: skip
    big_when_small_finished = len(big_done)
    await big

    assert len(small_done) == 20 and len(big_done) == 2000
    # Served in turn, the small job needs about as many slots as its own 20 URLs again from the big one.
    assert big_when_small_finished < 500, big_when_small_finished
