"""The engine against loopback servers that misbehave: retries, redirects, limits, caps, fairness.

Every URL must end with the right outcome within its deadline. Timings use
generous margins (the machine is shared) and assert orderings, not exact times.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from jobs.engine.fetcher import (
    FetchOptions,
    FetchResult,
    HostSlots,
    fetch_all,
    fetch_one,
    make_client,
    parse_retry_after,
)
from tests.target import TargetServer, gzip_bomb

FAST = FetchOptions(timeout=5, retries=2, backoff_base=0.05, backoff_cap=0.2)


@pytest.fixture(scope="module")
def server() -> Iterator[TargetServer]:
    with TargetServer(body_bytes=64) as target:
        yield target


@pytest.fixture
def target(server: TargetServer) -> TargetServer:
    server.wait_for(lambda s: s.in_flight == 0)
    server.reset_stats()
    return server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(max_connections=200) as client:
        yield client


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback URL nothing listens on (bound, not listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"


def key() -> str:
    """A fresh ?key= so per-key server counters start at zero."""
    return f"key={time.monotonic_ns()}"


# --- retries ----------------------------------------------------------------------------------------------


async def test_503_then_200_is_retried_and_records_each_failed_attempt(
    target: TargetServer, client: httpx.AsyncClient
) -> None:
    result = await fetch_one(client, 0, target.url(f"/flaky/2?{key()}"), options=FAST)

    assert (result.outcome, result.status_code, result.attempts, result.error_class) == ("succeeded", 200, 3, "")
    assert result.error == (
        "(attempt 1: http_status: 503 Service Unavailable); (attempt 2: http_status: 503 Service Unavailable)"
    )
    assert result.sha256 == hashlib.sha256(b"finally\n").hexdigest()
    assert target.stats().requests == 3


async def test_retries_run_out(target: TargetServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, target.url(f"/flaky/5?{key()}"), options=FAST)

    assert (result.outcome, result.status_code, result.attempts, result.error_class) == ("failed", 503, 3, "http_status")
    assert result.error.startswith("http_status: 503 Service Unavailable; (attempt 1: http_status: 503")


async def test_404_is_not_retried(target: TargetServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, target.url("/status/404"), options=FAST)
    assert (result.outcome, result.attempts, result.error_class) == ("failed", 1, "http_status")


@pytest.mark.parametrize("after", ["1", "date"])
async def test_429_waits_for_retry_after(target: TargetServer, client: httpx.AsyncClient, after: str) -> None:
    started = time.monotonic()
    result = await fetch_one(client, 0, target.url(f"/throttled/1?after={after}&{key()}"), options=FAST)
    elapsed = time.monotonic() - started

    assert (result.outcome, result.attempts) == ("succeeded", 2)
    assert result.error == "(attempt 1: http_status: 429 Too Many Requests)"
    # Backoff alone would be < 0.2 s; the server asked for 1 s (or, as a date, 1-2 s).
    assert elapsed >= 0.95, elapsed


async def test_a_retry_after_beyond_the_cap_is_not_waited_for(target: TargetServer, client: httpx.AsyncClient) -> None:
    options = FetchOptions(timeout=5, retries=2, retry_after_cap=2)
    started = time.monotonic()
    result = await fetch_one(client, 0, target.url(f"/throttled/1?after=3600&{key()}"), options=options)

    assert time.monotonic() - started < 4
    assert (result.outcome, result.attempts, result.error_class) == ("failed", 1, "http_status")
    assert "Retry-After 3600 s is longer than the cap of 2 s" in result.error


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    later = (now + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(later, now=now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_connect_errors_are_retried(client: httpx.AsyncClient, refused_url: str) -> None:
    result = await fetch_one(client, 0, refused_url, options=FAST)
    assert (result.outcome, result.attempts, result.error_class) == ("failed", 3, "connect")
    assert result.error.count("(attempt") == 2


async def test_a_waiting_retry_holds_no_slot(target: TargetServer, client: httpx.AsyncClient) -> None:
    """Concurrency 1: while the first URL waits 2 s for its retry, the others are fetched."""
    options = FetchOptions(timeout=5, retries=1, backoff_base=0.01)
    items = [(0, target.url(f"/throttled/1?after=2&{key()}"))] + [(i, target.url("/ok")) for i in range(1, 6)]
    finished: list[tuple[int, float]] = []
    started = time.monotonic()

    def on_result(result: FetchResult) -> None:
        finished.append((result.position, time.monotonic() - started))

    await fetch_all(client, items, concurrency=1, options=options, on_result=on_result)

    order = [position for position, _ in finished]
    assert order[-1] == 0, finished  # the throttled one, after its wait
    assert all(at < 1.8 for position, at in finished if position != 0), finished


# --- redirects ------------------------------------------------------------------------------------------


async def test_a_redirect_chain_is_followed_by_hand(target: TargetServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, target.url("/redirect/3?code=301"), options=FAST)

    assert (result.outcome, result.status_code, result.redirects, result.attempts) == ("succeeded", 200, 3, 1)
    assert result.final_url == target.url("/ok")
    assert target.stats().requests == 4


async def test_too_many_redirects(target: TargetServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, target.url("/redirect/5"), options=FetchOptions(timeout=5, max_redirects=4))

    assert (result.outcome, result.error_class, result.redirects) == ("failed", "too_many_redirects", 4)
    assert result.error == "too_many_redirects: more than 4 redirects"
    assert target.stats().requests == 5


async def test_a_redirect_loop_ends(target: TargetServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, target.url("/loop/a"), options=FAST)

    assert (result.outcome, result.error_class, result.attempts) == ("failed", "too_many_redirects", 1)
    assert result.error == f"too_many_redirects: redirect loop back to {target.url('/loop/a')}"


async def test_a_redirect_to_another_scheme_is_blocked(target: TargetServer, client: httpx.AsyncClient) -> None:
    from jobs.engine.netguard import Guard

    url = target.url("/redirect-to?url=file:///etc/passwd")
    result = await fetch_one(client, 0, url, options=FAST, guard=Guard(allow_private=True))
    assert (result.outcome, result.error_class, result.redirects) == ("failed", "blocked", 1)
    assert "scheme 'file' is not http or https" in result.error


# --- limits ---------------------------------------------------------------------------------------------


async def test_a_gzip_bomb_stops_at_the_cap_with_bounded_memory(target: TargetServer, client: httpx.AsyncClient) -> None:
    gzip_bomb(256)  # built (and cached) before measuring
    options = FetchOptions(timeout=30, max_bytes=10 * 1024 * 1024)
    tracemalloc.start()
    try:
        result = await fetch_one(client, 0, target.url("/gzip-bomb?mb=256"), options=options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (result.outcome, result.error_class, result.bytes) == ("failed", "too_large", 10 * 1024 * 1024)
    assert result.error == "too_large: body larger than 10485760 bytes (after decoding)"
    # 256 MiB decoded would be 256 MiB; we hold 64 KiB pieces (plus the server thread's 1.1 MiB body).
    assert peak < 8 * 1024 * 1024, f"peak traced memory {peak / 2**20:.1f} MiB"


async def test_a_small_gzip_body_is_decoded_counted_and_hashed(target: TargetServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, target.url("/gzip-bomb?mb=1"), options=FAST)
    assert (result.outcome, result.bytes, result.content_type) == ("succeeded", 1024 * 1024, "text/plain")
    assert result.sha256 == hashlib.sha256(bytes(1024 * 1024)).hexdigest()


async def test_a_plain_body_over_the_cap_is_too_large(target: TargetServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, target.url("/bytes/5000"), options=FetchOptions(timeout=5, max_bytes=4096))
    assert (result.outcome, result.error_class, result.bytes, result.sha256) == ("failed", "too_large", 4096, "")


async def test_a_body_trickling_one_byte_a_second_hits_the_deadline(
    target: TargetServer, client: httpx.AsyncClient
) -> None:
    url = target.url("/slow-body?chunks=60&chunk_bytes=1&interval_ms=1000")
    started = time.monotonic()
    result = await fetch_one(client, 0, url, options=FetchOptions(timeout=2, retries=0))
    elapsed = time.monotonic() - started

    assert (result.outcome, result.error_class, result.status_code) == ("failed", "timeout", 200)
    assert 1.9 < elapsed < 8, elapsed


async def test_a_server_that_never_answers_times_out_on_every_attempt(
    target: TargetServer, client: httpx.AsyncClient
) -> None:
    started = time.monotonic()
    result = await fetch_one(client, 0, target.url("/hang"), options=FetchOptions(timeout=1, retries=1, backoff_base=0.01))
    elapsed = time.monotonic() - started

    assert (result.outcome, result.error_class, result.attempts) == ("failed", "timeout", 2)
    assert 1.9 < elapsed < 8, elapsed


async def test_200_kb_of_headers_fail_cleanly(target: TargetServer, client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    result = await fetch_one(client, 0, target.url("/big-headers?kb=200"), options=FetchOptions(timeout=5))

    assert time.monotonic() - started < 5
    assert (result.outcome, result.error_class) == ("failed", "protocol"), result.error


async def test_a_reset_mid_body_is_a_protocol_failure(target: TargetServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, target.url("/reset"), options=FetchOptions(timeout=5))
    assert (result.outcome, result.error_class, result.status_code, result.sha256) == ("failed", "protocol", 200, "")


# --- per-host caps and fairness ---------------------------------------------------------------------------


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
    assert hosts.in_flight("127.0.0.1") == 0


async def test_host_delay_spaces_requests(target: TargetServer, client: httpx.AsyncClient) -> None:
    options = FetchOptions(timeout=5, per_host=8, host_delay=0.2)
    finished: list[float] = []
    started = time.monotonic()
    await fetch_all(client, [(i, target.url("/ok")) for i in range(5)], concurrency=5, options=options,
                    on_result=lambda r: finished.append(time.monotonic() - started), hosts=HostSlots())  # fmt: skip

    assert len(finished) == 5
    assert max(finished) >= 0.8  # starts at 0, 0.2, 0.4, 0.6, 0.8 s


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


# --- robots.txt -------------------------------------------------------------------------------------------


ROBOTS = "User-agent: *\nDisallow: /ok/private\n\nUser-agent: batchfetch\nDisallow: /ok/mine\n"


async def test_robots_txt_is_fetched_once_and_obeyed(client: httpx.AsyncClient) -> None:
    options = FetchOptions(timeout=5, respect_robots=True)
    urls = [f"/ok/{i}" for i in range(10)] + ["/ok/mine/1", "/ok/private/x"] * 3
    results: list[FetchResult] = []
    with TargetServer(robots=ROBOTS) as robots_server:
        items = [(i, robots_server.url(path)) for i, path in enumerate(urls)]
        await fetch_all(client, items, concurrency=8, options=options, on_result=results.append)
        requests = robots_server.stats().requests

    by_position = {r.position: r for r in results}
    assert all(by_position[i].outcome == "succeeded" for i in range(10))
    # /ok/mine is disallowed for our agent by name; /ok/private only by the * group, which does not apply
    # to us since a group naming us replaces it (RFC 9309 2.2.1).
    assert [by_position[i].error_class for i in range(10, 16)] == ["robots", "", "robots", "", "robots", ""]
    refused = by_position[10]
    assert (refused.outcome, refused.attempts, refused.status_code) == ("failed", 0, None)
    assert refused.error == f"robots: disallowed by {robots_server.url('/robots.txt')}"
    assert requests == 10 + 3 + 1  # the allowed URLs, and robots.txt once


async def test_robots_txt_missing_allows_all_and_unreachable_disallows_all(
    target: TargetServer, client: httpx.AsyncClient, refused_url: str
) -> None:
    options = FetchOptions(timeout=5, respect_robots=True)
    results: list[FetchResult] = []
    await fetch_all(client, [(0, target.url("/ok")), (1, refused_url + "x")], concurrency=2, options=options,
                    on_result=results.append)  # fmt: skip

    by_position = {r.position: r for r in results}
    assert by_position[0].outcome == "succeeded"  # /robots.txt is a 404 there
    assert by_position[1].error_class == "robots"
    assert "could not be read (connect: " in by_position[1].error


async def test_host_slots_forget_idle_hosts(target: TargetServer, client: httpx.AsyncClient) -> None:
    hosts = HostSlots()
    options = FetchOptions(timeout=5, host_delay=2)
    await fetch_all(client, [(0, target.url("/ok"))], concurrency=1, options=options, on_result=lambda r: None,
                    hosts=hosts)  # fmt: skip
    assert "127.0.0.1" in hosts._hosts  # its pacing still applies for 2 s after the request started
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
