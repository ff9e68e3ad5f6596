"""Pause and resume (queue, worker, API), re-run failed, the stats endpoint and the results filters.

The worker tests run a real batch-mode `Worker` against the loopback target
server, which counts requests: a pause must let the requests in flight finish
(each one ends up recorded) and start no new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import AsyncClient
from django.utils import timezone

from jobs.models import Job, Result
from jobs.queue import claims, control, records
from jobs.worker.runner import Worker
from tests.conftest import MEMORY_LAYER
from tests.target import TargetServer
from tests.worker.conftest import (
    amake_job,
    assert_counters_match_rows,
    eventually,
    expire_shares,
    outcomes,
    reload,
    shares_of,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def target() -> Any:
    with TargetServer(delay_ms=0) as server:
        yield server


@pytest.fixture
async def owner() -> AsyncIterator[Any]:
    yield await get_user_model().objects.acreate(username="owner")
    # The async ORM's queries run on asgiref's sync thread and, unlike database_sync_to_async, leave its
    # connection open: close it, or PostgreSQL refuses to drop the test database at the session's end.
    await sync_to_async(connections.close_all)()


@pytest.fixture
async def client(owner: Any, settings: Any) -> AsyncClient:
    settings.CHANNEL_LAYERS = MEMORY_LAYER
    client = AsyncClient()
    await client.aforce_login(owner)
    return client


# --- the queue ----------------------------------------------------------------------------


def test_a_queued_job_pauses_at_once_is_not_claimed_and_resumes(django_user_model: Any) -> None:
    owner = django_user_model.objects.create_user(username="q")
    job = control.enqueue_job(owner=owner, urls=["http://a.example/"], name="", concurrency=1, timeout=1)
    assert control.request_pause(job.pk).status == Job.Status.PAUSED
    assert claims.claim_job("w") is None
    assert control.request_resume(job.pk).status == Job.Status.QUEUED
    claim = claims.claim_job("w")
    assert claim is not None and claim.job.status == Job.Status.RUNNING


def test_pause_and_resume_leave_settled_jobs_alone(django_user_model: Any) -> None:
    owner = django_user_model.objects.create_user(username="s")
    job = control.enqueue_job(owner=owner, urls=["http://a.example/"], name="", concurrency=1, timeout=1)
    for status in (Job.Status.COMPLETED, Job.Status.CANCELLING, Job.Status.CANCELLED):
        Job.objects.filter(pk=job.pk).update(status=status)
        assert control.request_pause(job.pk).status == status
        assert control.request_resume(job.pk).status == status


def test_cancelling_a_paused_job_cancels_its_pending_rows(django_user_model: Any) -> None:
    owner = django_user_model.objects.create_user(username="c")
    job = control.enqueue_job(owner=owner, urls=["http://a.example/", "http://b.example/"], name="", concurrency=1,
                            timeout=1)
    control.request_pause(job.pk)
    cancelled = control.request_cancel(job.pk)
    assert (cancelled.status, cancelled.cancelled) == (Job.Status.CANCELLED, 2)
    assert outcomes(job) == {"cancelled": 2}
    assert_counters_match_rows(job)


def test_a_running_job_pauses_via_pausing_and_release_parks_it(django_user_model: Any) -> None:
    owner = django_user_model.objects.create_user(username="r")
    job = control.enqueue_job(owner=owner, urls=["http://a.example/"], name="", concurrency=1, timeout=1)
    claim = claims.claim_job("w")
    assert claim is not None
    assert control.request_pause(job.pk).status == Job.Status.PAUSING
    assert claims.claim_chunk(claim) is not None
    released = records.leave_job(claim, "pause")
    assert (released.status, shares_of(job)) == (Job.Status.PAUSED, [])
    assert claims.claim_job("w2") is None


def test_a_pausing_job_of_a_crashed_worker_is_reclaimed_still_pausing(django_user_model: Any) -> None:
    owner = django_user_model.objects.create_user(username="x")
    job = control.enqueue_job(owner=owner, urls=["http://a.example/"], name="", concurrency=1, timeout=1)
    assert claims.claim_job("crashed") is not None
    control.request_pause(job.pk)
    expire_shares(job)
    claim = claims.claim_job("next")
    assert claim is not None and claim.job.status == Job.Status.PAUSING
    assert shares_of(job) == ["next"]  # the crashed worker's lapsed share is gone


# --- the worker ---------------------------------------------------------------------------


async def test_pause_lets_in_flight_requests_finish_starts_none_and_resume_completes(
    owner: Any, target: TargetServer
) -> None:
    # The first two waves are slow: when the pause comes, wave one is in flight and the fetchers
    # already hold wave two (the fetch engine's queue is `concurrency` deep). Wave two must not start.
    concurrency, slow, total = 6, 12, 200
    urls = [target.url(f"/ok/{i}?delay={3000 if i < slow else 0}") for i in range(total)]
    job = await amake_job(owner, urls, concurrency=concurrency)
    worker = asyncio.create_task(Worker(batch=True, handle_signals=False).run())
    try:
        await eventually(lambda: target.stats().in_flight == concurrency, timeout=15, what="wave one is in flight")
        pausing = await database_sync_to_async(control.request_pause)(job.pk)
        assert pausing.status == Job.Status.PAUSING
        # The worker releases the paused job; with nothing else queued the batch worker exits.
        await asyncio.wait_for(worker, timeout=15)
    finally:
        if not worker.done():
            worker.cancel()
    paused = await reload(job)
    assert paused.status == Job.Status.PAUSED
    assert await database_sync_to_async(shares_of)(paused) == []
    stats = target.stats()
    assert stats.in_flight == 0
    # Wave one finished and was recorded (nothing cut off), wave two never started.
    assert (stats.requests, paused.succeeded, paused.done) == (concurrency, concurrency, concurrency)
    await database_sync_to_async(assert_counters_match_rows)(paused)
    await asyncio.sleep(0.3)
    assert target.stats().requests == concurrency  # nothing starts while paused

    resumed = await database_sync_to_async(control.request_resume)(job.pk)
    assert resumed.status == Job.Status.QUEUED
    await asyncio.wait_for(Worker(batch=True, handle_signals=False).run(), timeout=60)
    done = await reload(job)
    assert (done.status, done.succeeded, done.failed, done.cancelled) == (Job.Status.COMPLETED, total, 0, 0)
    assert target.stats().requests == total  # every URL fetched exactly once across the pause
    await database_sync_to_async(assert_counters_match_rows)(done)


async def test_a_cancel_while_pausing_is_honoured_at_once(owner: Any, target: TargetServer) -> None:
    job = await amake_job(owner, [target.url(f"/ok/{i}?delay=5000") for i in range(20)], concurrency=4)
    worker = asyncio.create_task(Worker(batch=True, handle_signals=False).run())
    try:
        await eventually(lambda: target.stats().in_flight == 4, timeout=15, what="requests in flight")
        await database_sync_to_async(control.request_pause)(job.pk)
        await asyncio.sleep(0.8)  # the worker has seen the pause and waits for its 5 s requests
        assert (await reload(job)).status == Job.Status.PAUSING
        cancelling = await database_sync_to_async(control.request_cancel)(job.pk)
        assert cancelling.status == Job.Status.CANCELLING
        took = await eventually(lambda: _is_cancelled(job), timeout=3, what="the job reads cancelled")
        await asyncio.wait_for(worker, timeout=10)
    finally:
        if not worker.done():
            worker.cancel()
    assert took < 1.5  # the in-flight requests were cut off, not waited for
    cancelled = await reload(job)
    assert (cancelled.cancelled, cancelled.succeeded) == (20, 0)
    await database_sync_to_async(assert_counters_match_rows)(cancelled)


async def _is_cancelled(job: Job) -> bool:
    return (await reload(job)).status == Job.Status.CANCELLED


async def test_a_job_reclaimed_while_pausing_is_released_paused(owner: Any, target: TargetServer) -> None:
    job = await amake_job(owner, [target.url(f"/ok/{i}") for i in range(5)], concurrency=2)

    @database_sync_to_async
    def crash_while_pausing() -> None:
        assert claims.claim_job("crashed") is not None
        control.request_pause(job.pk)
        expire_shares(job)

    await crash_while_pausing()
    await asyncio.wait_for(Worker(batch=True, handle_signals=False).run(), timeout=20)
    assert (await reload(job)).status == Job.Status.PAUSED
    assert target.stats().requests == 0


# --- the API ------------------------------------------------------------------------------


async def test_pause_resume_api(client: AsyncClient, owner: Any) -> None:
    job = await amake_job(owner, ["http://a.example/"], concurrency=1)
    paused = await client.post(f"/api/jobs/{job.id}/pause/")
    assert (paused.status_code, paused.json()["status"]) == (202, "paused")
    resumed = await client.post(f"/api/jobs/{job.id}/resume/")
    assert (resumed.status_code, resumed.json()["status"]) == (202, "queued")
    await Job.objects.filter(pk=job.pk).aupdate(status=Job.Status.COMPLETED)
    refused = await client.post(f"/api/jobs/{job.id}/pause/")
    assert (refused.status_code, refused.json()) == (
        409, {"error": "cannot pause a completed job (only a queued or running one)"}
    )  # fmt: skip
    assert (await client.post(f"/api/jobs/{job.id}/resume/")).status_code == 409
    assert (await client.get(f"/api/jobs/{job.id}/pause/")).status_code == 405


async def test_pause_api_of_another_users_job_is_404(client: AsyncClient) -> None:
    other = await get_user_model().objects.acreate(username="other")
    job = await amake_job(other, ["http://a.example/"], concurrency=1)
    for action in ("pause", "resume", "rerun-failed", "stats"):
        method = client.get if action == "stats" else client.post
        assert (await method(f"/api/jobs/{job.id}/{action}/")).status_code == 404
    assert (await Job.objects.aget(pk=job.pk)).status == Job.Status.QUEUED


async def make_mixed_job(owner: Any) -> Job:
    """A running job: 0-3 succeeded (200, 200, 200, 301), 4-5 failed 404, 6 timed out, 7 cancelled, 8-9 pending."""
    job = await Job.objects.acreate(owner=owner, name="mixed", concurrency=3, timeout=2.5, total=10,
                                    status=Job.Status.RUNNING, succeeded=4, failed=3, cancelled=1)
    now = timezone.now().replace(microsecond=0)
    rows = []
    for i in range(10):
        row = Result(job=job, position=i, url=f"http://site{i % 3}.example/page/{i}")
        if i < 4:
            row.outcome, row.status_code = "succeeded", 200 if i < 3 else 301
        elif i < 6:
            row.outcome, row.status_code, row.error = "failed", 404, "http_status: 404 Not Found"
        elif i == 6:
            row.outcome, row.error = "failed", "timeout: no complete response within 2.5 s"
        elif i == 7:
            row.outcome = "cancelled"
        if row.outcome != "pending":
            row.fetched_at = now + timedelta(seconds=i // 2)  # two rows per second
        rows.append(row)
    await Result.objects.abulk_create(rows)
    return job


async def test_stats_counts_status_codes_error_classes_and_throughput(client: AsyncClient, owner: Any) -> None:
    job = await make_mixed_job(owner)
    data = (await client.get(f"/api/jobs/{job.id}/stats/")).json()
    assert data["job"]["id"] == str(job.id) and data["job"]["done"] == 8
    assert data["status_codes"] == [{"code": 200, "count": 3}, {"code": 404, "count": 2}, {"code": 301, "count": 1}]
    assert data["errors"] == [{"class": "http_status", "count": 2}, {"class": "timeout", "count": 1}]
    # Seven fetched rows (the cancelled one is not a fetch), two per second.
    assert [point["n"] for point in data["throughput"]] == [2, 2, 2, 1]


async def test_results_filters_and_newest_first_pages(client: AsyncClient, owner: Any) -> None:
    job = await make_mixed_job(owner)
    base = f"/api/jobs/{job.id}/results/"

    codes = (await client.get(f"{base}?status_code=404,301")).json()
    assert [row["position"] for row in codes["results"]] == [3, 4, 5]
    searched = (await client.get(f"{base}?q=SITE1.example")).json()
    assert [row["position"] for row in searched["results"]] == [1, 4, 7]

    # Newest first, final fetched rows only, paged with `before`.
    first = (await client.get(f"{base}?order=newest&outcome=succeeded,failed&limit=4")).json()
    assert [row["position"] for row in first["results"]] == [6, 5, 4, 3]
    second = (await client.get(first["next"])).json()
    assert [row["position"] for row in second["results"]] == [2, 1, 0]
    assert second["next"] is None
    failures = (await client.get(f"{base}?order=newest&outcome=failed&q=site0")).json()
    assert [row["position"] for row in failures["results"]] == [6]

    bad = await client.get(f"{base}?status_code=abc&order=sideways")
    assert bad.status_code == 400 and set(bad.json()["errors"]) == {"order"}
    bad = await client.get(f"{base}?status_code=99")
    assert bad.json()["errors"] == {"status_code": "must be HTTP status codes from 100 to 599, separated by commas"}
    bad = await client.get(f"{base}?order=newest&before=9")
    assert bad.json()["errors"] == {"before": "no fetched result at that position"}


async def test_rerun_failed_makes_a_job_of_the_failed_urls_with_the_same_options(
    client: AsyncClient, owner: Any
) -> None:
    job = await make_mixed_job(owner)
    response = await client.post(f"/api/jobs/{job.id}/rerun-failed/")
    assert response.status_code == 201
    data = response.json()
    assert response["Location"] == f"/api/jobs/{data['id']}/"
    assert (data["name"], data["total"], data["concurrency"], data["timeout"], data["status"]) == (
        "mixed (re-run failed)", 3, 3, 2.5, "queued"
    )  # fmt: skip
    urls = [url async for url in Result.objects.filter(job_id=data["id"]).order_by("position").values_list("url", flat=True)]
    assert urls == ["http://site1.example/page/4", "http://site2.example/page/5", "http://site0.example/page/6"]

    clean = await amake_job(owner, ["http://a.example/"], concurrency=1)
    refused = await client.post(f"/api/jobs/{clean.id}/rerun-failed/")
    assert (refused.status_code, refused.json()) == (409, {"error": "the job has no failed URLs to re-run"})
