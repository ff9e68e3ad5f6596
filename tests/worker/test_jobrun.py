"""The worker hands each job's fetch options to the engine and records what comes back (real target, real DB)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command

from jobs.models import Job, Result
from jobs.queue import control
from jobs.worker.runner import Worker
from tests.target import TargetServer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer(delay_ms=20, robots="User-agent: *\nDisallow: /private\n") as server:
        yield server


def make_job(owner: Any, urls: list[str], *, concurrency: int = 4, **options: Any) -> Job:
    return control.enqueue_job(
        owner=owner, urls=urls, name="test", concurrency=concurrency, timeout=5, options=options
    )


def rows(job: Job) -> list[Result]:
    return list(Result.objects.filter(job=job).order_by("position"))


def run_worker(*args: str) -> None:
    call_command("runworker", "--batch", "--concurrency", "50", *args)


def test_details_and_options_reach_the_rows(owner: Any, target: TargetServer) -> None:
    job = make_job(
        owner,
        [target.url("/redirect/2"), target.url("/redirect/5"), target.url("/bytes/3000"), target.url("/status/503")],
        max_redirects=3, max_bytes=2000, retries=1,
    )  # fmt: skip
    run_worker()

    chain, too_many, too_large, unavailable = rows(job)
    assert (chain.outcome, chain.redirects, chain.final_url, chain.attempts) == ("succeeded", 2, target.url("/ok"), 1)
    assert (chain.sha256, chain.content_type, chain.bytes) == (
        hashlib.sha256(b"x" * 64).hexdigest(), "application/octet-stream", 64
    )
    assert (too_many.error_class, too_many.redirects) == ("too_many_redirects", 3)
    assert (too_large.error_class, too_large.bytes) == ("too_large", 2000)
    assert (unavailable.error_class, unavailable.attempts, unavailable.status_code) == ("http_status", 2, 503)
    assert unavailable.error == "http_status: 503 Service Unavailable (the same on all 2 attempts)"


def test_the_guard_is_on_unless_the_setting_lifts_it(owner: Any, target: TargetServer, settings: Any) -> None:
    settings.FETCH_ALLOW_PRIVATE_ADDRESSES = False
    job = make_job(owner, [target.url("/ok"), target.url("/ok").replace("127.0.0.1", "localhost")])
    run_worker()

    job.refresh_from_db()
    assert (job.status, job.failed) == (Job.Status.COMPLETED, 2)
    for row in rows(job):
        assert (row.outcome, row.error_class, row.attempts, row.status_code) == ("failed", "blocked", 0, None)
        assert "loopback address" in row.error
    assert target.stats().requests == 0


def test_per_host_cap_holds_across_the_jobs_of_a_worker(owner: Any, target: TargetServer) -> None:
    first = make_job(owner, [target.url("/delay/150")] * 12, concurrency=10, per_host=3)
    second = make_job(owner, [target.url("/delay/150")] * 12, concurrency=10, per_host=3)
    run_worker("--max-jobs", "2")

    for job in (first, second):
        job.refresh_from_db()
        assert (job.status, job.succeeded) == (Job.Status.COMPLETED, 12)
    assert target.stats().peak_in_flight == 3


def test_respect_robots(owner: Any, target: TargetServer) -> None:
    urls = [target.url("/ok/a"), target.url("/private/b"), target.url("/ok/c")]
    obeying = make_job(owner, urls, respect_robots=True)
    run_worker()

    assert [(row.outcome, row.error_class) for row in rows(obeying)] == [
        ("succeeded", ""), ("failed", "robots"), ("succeeded", "")
    ]
    assert rows(obeying)[1].error == f"robots: disallowed by {target.url('/robots.txt')}"
    assert target.stats().requests == 3  # robots.txt and the two allowed URLs


async def test_a_small_job_finishes_long_before_a_huge_one(owner: Any, target: TargetServer) -> None:
    """Fairness in the real worker: a 2,000-URL job, then a 20-URL job, both at the worker's concurrency."""
    c = 10
    make = database_sync_to_async(make_job)
    big = await make(owner, [target.url(f"/ok/{i}") for i in range(2000)], concurrency=c, per_host=1000, retries=0)
    run = asyncio.create_task(Worker(concurrency=c, max_jobs=2, batch=True, handle_signals=False).run())
    while (await reload(big)).done < 100:  # the big job is in full swing
        assert not run.done()
        await asyncio.sleep(0.05)
    small = await make(owner, [target.url(f"/ok/s{i}") for i in range(20)], concurrency=c, per_host=1000)
    while (await reload(small)).status != Job.Status.COMPLETED:
        assert not run.done()
        await asyncio.sleep(0.02)
    big_done_then = (await reload(big)).done
    await run

    big, small = await reload(big), await reload(small)
    assert (big.status, big.succeeded, small.succeeded) == (Job.Status.COMPLETED, 2000, 20)
    # Claimed within a poll (~1 s), then served in turn with the big job: it does not wait for it.
    assert big_done_then < 1500, big_done_then
    assert small.finished_at is not None and big.finished_at is not None and small.finished_at < big.finished_at


@database_sync_to_async
def reload(job: Job) -> Job:
    job.refresh_from_db()
    return job
