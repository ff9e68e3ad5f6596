"""`FetchOptions.url_deadline`: one URL over all its attempts and waits, from when its first request may go out.

(The end-to-end proof with the real worker is tests/worker/test_deadlines.py.)
"""

from __future__ import annotations

import asyncio
import time

import httpx

from jobs.engine.fetch import fetch_one
from jobs.engine.slots import Slots
from jobs.engine.values import FetchOptions
from tests.target import TargetServer


async def test_a_request_in_flight_is_cut_at_the_url_deadline(target: TargetServer, client: httpx.AsyncClient) -> None:
    options = FetchOptions(timeout=30, retries=3, url_deadline=0.3)
    result = await fetch_one(client, 0, target.url("/hang"), options=options)
    assert (result.outcome, result.error_class, result.attempts) == ("failed", "deadline", 1)
    assert result.error == "deadline: not finished within the URL deadline of 0.3 s"
    assert 300 <= result.elapsed_ms < 600
    await asyncio.sleep(0.05)
    assert target.stats().in_flight == 0  # the request was cancelled, not left running


async def test_waiting_for_a_slot_does_not_count(target: TargetServer, client: httpx.AsyncClient) -> None:
    """As the attempt's own deadline: a URL queued behind others is not late for it."""
    job_slot = asyncio.Semaphore(1)
    await job_slot.acquire()
    asyncio.get_running_loop().call_later(0.5, job_slot.release)
    options = FetchOptions(url_deadline=0.3)
    started = time.monotonic()
    result = await fetch_one(client, 0, target.url("/ok"), options=options, slots=Slots(job=job_slot))
    assert (result.outcome, result.error_class) == ("succeeded", "")
    assert time.monotonic() - started >= 0.5


async def test_a_url_that_ends_in_time_is_not_touched(target: TargetServer, client: httpx.AsyncClient) -> None:
    options = FetchOptions(retries=2, backoff_base=0.01, url_deadline=5)
    result = await fetch_one(client, 0, target.url("/status/404"), options=options)
    assert (result.error_class, result.attempts, result.status_code) == ("http_status", 1, 404)
