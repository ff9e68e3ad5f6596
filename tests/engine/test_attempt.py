"""One attempt: redirects followed by hand (chains, caps, loops, schemes) under one deadline."""

from __future__ import annotations

import time

import httpx

from jobs.engine.fetch import fetch_one
from jobs.engine.values import FetchOptions
from tests.engine.helpers import FAST
from tests.target import TargetServer


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


async def test_a_body_trickling_one_byte_a_second_hits_the_deadline(
    target: TargetServer, client: httpx.AsyncClient
) -> None:
    url = target.url("/slow-body?chunks=60&chunk_bytes=1&interval_ms=1000")
    started = time.monotonic()
    result = await fetch_one(client, 0, url, options=FetchOptions(timeout=2, retries=0))
    elapsed = time.monotonic() - started

    assert (result.outcome, result.error_class, result.status_code) == ("failed", "timeout", 200)
    assert 1.9 < elapsed < 8, elapsed
