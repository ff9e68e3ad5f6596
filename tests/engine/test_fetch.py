"""fetch_one against a loopback server: statuses, errors, deadlines, cancellation, retries."""

from __future__ import annotations

import asyncio
import hashlib
import time

import httpx
import pytest

from jobs.engine.fetch import fetch_one
from jobs.engine.pipeline import fetch_all
from jobs.engine.slots import Slots
from jobs.engine.values import FetchOptions, FetchResult
from tests.engine.helpers import FAST, key, until
from tests.target import TargetServer


async def test_success_reports_status_and_body_bytes(target: TargetServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 7, target.url("/delay/100?x=1"), timeout=5)
    other = await fetch_one(client, 8, target.url("/bytes/100000"), timeout=5)

    assert result == FetchResult(
        position=7,
        url=target.url("/delay/100?x=1"),
        outcome="succeeded",
        status_code=200,
        bytes=64,
        elapsed_ms=result.elapsed_ms,
        attempts=1,
        error="",
        final_url=target.url("/delay/100?x=1"),
        content_type="application/octet-stream",
        sha256=hashlib.sha256(b"x" * 64).hexdigest(),
        headers=result.headers,
    )
    assert result.headers and ("Content-Type", "application/octet-stream") in result.headers
    assert 100 <= result.elapsed_ms < 1000
    assert (other.outcome, other.status_code, other.bytes) == ("succeeded", 200, 100_000)


@pytest.mark.parametrize(
    ("code", "outcome", "error"),
    [
        (404, "failed", "http_status: 404 Not Found"),
        (503, "failed", "http_status: 503 Service Unavailable"),
        (302, "succeeded", ""),  # redirects are not followed: a 3xx is a response with status < 400
    ],
)
async def test_status_code_decides_the_outcome(
    target: TargetServer, client: httpx.AsyncClient, code: int, outcome: str, error: str
) -> None:
    result = await fetch_one(client, 0, target.url(f"/status/{code}"), timeout=5)

    assert (result.outcome, result.status_code, result.error, result.bytes) == (outcome, code, error, 7)


async def test_connection_refused_is_a_connect_error(client: httpx.AsyncClient, refused_url: str) -> None:
    result = await fetch_one(client, 3, refused_url, timeout=5)

    assert (result.outcome, result.status_code, result.bytes) == ("failed", None, 0)
    assert result.error == f"connect: connection refused by {refused_url.removeprefix('http://').rstrip('/')}"


async def test_tls_to_a_plain_http_port_is_a_tls_error(target: TargetServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, target.url("/ok").replace("http://", "https://"), timeout=5)

    assert result.outcome == "failed"
    assert result.error.startswith("tls: "), result.error


@pytest.mark.parametrize(
    "url", ["not a url", "", "ftp://127.0.0.1/", "http://", "http://127.0.0.1:99999/", "http://[::1/"]
)
async def test_invalid_url(client: httpx.AsyncClient, url: str) -> None:
    result = await fetch_one(client, 0, url, timeout=5)

    assert (result.outcome, result.status_code, result.url) == ("failed", None, url)
    assert result.error.startswith("invalid_url: "), result.error


@pytest.mark.parametrize(
    "path",
    [
        "/hang",  # no response at all
        "/slow-body?chunks=40&interval_ms=50",  # a chunk every 50 ms: httpx's read timeout would never fire
    ],
)
async def test_deadline_covers_the_whole_fetch(target: TargetServer, client: httpx.AsyncClient, path: str) -> None:
    started = time.monotonic()
    result = await fetch_one(client, 0, target.url(path), timeout=0.5)
    elapsed = time.monotonic() - started

    assert 0.5 <= elapsed < 1.0
    assert (result.outcome, result.error) == ("failed", "timeout: no complete response within 0.5 s")
    if path != "/hang":
        assert result.status_code == 200 and 0 < result.bytes < 40 * 16  # what arrived before the deadline
    await until(target, lambda s: s.in_flight == 0, timeout=1)  # the connection was closed, not leaked


async def test_connection_reset_mid_body_is_a_protocol_error(target: TargetServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, target.url("/reset"), timeout=5)

    assert (result.outcome, result.status_code, result.bytes) == ("failed", 200, 64)
    assert result.error.startswith("protocol: "), result.error


async def test_cancelling_fetch_one_propagates(target: TargetServer, client: httpx.AsyncClient) -> None:
    task = asyncio.create_task(fetch_one(client, 0, target.url("/hang"), timeout=30))
    await until(target, lambda s: s.in_flight == 1)
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    await until(target, lambda s: s.in_flight == 0, timeout=1)


async def test_503_then_200_is_retried_and_records_each_failed_attempt(
    target: TargetServer, client: httpx.AsyncClient
) -> None:
    result = await fetch_one(client, 0, target.url(f"/flaky/2?{key()}"), options=FAST)

    assert (result.outcome, result.status_code, result.attempts, result.error_class) == ("succeeded", 200, 3, "")
    assert result.error == "(attempts 1-2: http_status: 503 Service Unavailable)"  # the history once, grouped
    assert result.sha256 == hashlib.sha256(b"finally\n").hexdigest()
    assert target.stats().requests == 3


async def test_retries_run_out(target: TargetServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, target.url(f"/flaky/5?{key()}"), options=FAST)

    assert (result.outcome, result.status_code, result.attempts, result.error_class) == ("failed", 503, 3, "http_status")
    assert result.error == "http_status: 503 Service Unavailable (the same on all 3 attempts)"


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


async def test_connect_errors_are_retried(client: httpx.AsyncClient, refused_url: str) -> None:
    result = await fetch_one(client, 0, refused_url, options=FAST)
    assert (result.outcome, result.attempts, result.error_class) == ("failed", 3, "connect")
    assert result.error.endswith("(the same on all 3 attempts)") and result.error.count("refused") == 1


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


async def test_a_server_that_never_answers_times_out_on_every_attempt(
    target: TargetServer, client: httpx.AsyncClient
) -> None:
    started = time.monotonic()
    result = await fetch_one(client, 0, target.url("/hang"), options=FetchOptions(timeout=1, retries=1, backoff_base=0.01))
    elapsed = time.monotonic() - started

    assert (result.outcome, result.error_class, result.attempts) == ("failed", "timeout", 2)
    assert 1.9 < elapsed < 8, elapsed


async def test_elapsed_ms_times_the_requests_not_the_wait_for_a_slot(
    target: TargetServer, client: httpx.AsyncClient
) -> None:
    """The job's only slot is busy for 0.6 s: the URL waits for it, then its request takes ~100 ms."""
    job = asyncio.Semaphore(1)
    await job.acquire()
    asyncio.get_running_loop().call_later(0.6, job.release)
    started = time.monotonic()
    result = await fetch_one(client, 0, target.url("/delay/100"), timeout=5, slots=Slots(job=job))

    assert time.monotonic() - started >= 0.6
    assert result.outcome == "succeeded"
    assert 100 <= result.elapsed_ms < 550, result.elapsed_ms

