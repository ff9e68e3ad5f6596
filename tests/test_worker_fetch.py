"""The worker hands each job's fetch options to the engine and records what comes back (real target, real DB)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command

from jobs import queue
from jobs.models import Job, Result
from tests.target import TargetServer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer(delay_ms=20, robots="User-agent: *\nDisallow: /private\n") as server:
        yield server


@pytest.fixture
def owner(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="owner")


def make_job(owner: Any, urls: list[str], *, concurrency: int = 4, **options: Any) -> Job:
    return queue.enqueue_job(
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
    assert "(attempt 1: http_status: 503 Service Unavailable)" in unavailable.error


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
