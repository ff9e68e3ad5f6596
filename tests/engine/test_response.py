"""Reading a response: Retry-After, decoded and capped bodies (gzip bombs), oversized headers, resets."""

from __future__ import annotations

import hashlib
import time
import tracemalloc
from datetime import datetime, timedelta, timezone

import httpx

from jobs.engine.fetch import fetch_one
from jobs.engine.response import HEADERS_MAX_CHARS, MASK, parse_retry_after
from jobs.engine.values import FetchOptions
from tests.engine.helpers import FAST
from tests.target import TargetServer, gzip_bomb


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    later = (now + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(later, now=now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


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


async def test_200_kb_of_headers_fail_cleanly(target: TargetServer, client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    result = await fetch_one(client, 0, target.url("/big-headers?kb=200"), options=FetchOptions(timeout=5))

    assert time.monotonic() - started < 5
    assert (result.outcome, result.error_class) == ("failed", "protocol"), result.error


async def test_the_headers_are_kept_in_order_with_set_cookie_masked(
    target: TargetServer, client: httpx.AsyncClient
) -> None:
    result = await fetch_one(client, 0, target.url("/cookies"), options=FAST)

    assert result.headers is not None
    names = [name for name, _value in result.headers]
    assert names[:3] == ["Set-Cookie", "Set-Cookie", "X-Trace"]
    assert result.headers[:3] == (("Set-Cookie", MASK), ("Set-Cookie", MASK), ("X-Trace", "t-1"))
    assert ("Content-Type", "text/plain; charset=utf-8") in result.headers
    assert "s3cr3t" not in repr(result)


async def test_headers_past_the_budget_are_counted_not_kept(target: TargetServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, target.url("/big-headers?kb=12"), options=FAST)

    assert result.outcome == "succeeded" and result.headers is not None
    *kept, (mark, summary) = result.headers
    assert sum(len(name) + len(value) for name, value in kept) <= HEADERS_MAX_CHARS
    assert 7 <= sum(name.startswith("X-Filler-") for name, _value in kept) <= 8
    assert mark == "…" and summary.endswith(f"more not kept (over {HEADERS_MAX_CHARS} characters)")
    assert int(summary.split()[0]) == 12 + 4 - len(kept)  # 12 fillers, Content-Type/-Length, Date, Server


async def test_a_redirect_keeps_the_last_responses_headers(target: TargetServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, target.url("/redirect/2"), options=FAST)
    missed = await fetch_one(client, 1, "http://127.0.0.1:9/", options=FAST)

    assert result.redirects == 2 and result.headers is not None
    assert ("Content-Type", "application/octet-stream") in result.headers
    assert not any(name == "Location" for name, _value in result.headers)
    assert missed.headers is None


async def test_a_reset_mid_body_is_a_protocol_failure(target: TargetServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, target.url("/reset"), options=FetchOptions(timeout=5))
    assert (result.outcome, result.error_class, result.status_code, result.sha256) == ("failed", "protocol", 200, "")
