"""Recording results and leaving a job (jobs.queue.records) on the real database.

Transactional tests throughout: claims run in their own transactions, from
several threads and processes, exactly as in production.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from django.db import IntegrityError, transaction

from jobs.engine.values import FetchResult
from jobs.models import Chunk, Job, Result, Share
from jobs.queue import claims, control, records
from tests.queue.conftest import assert_counters_match_rows, fetched, joined, make_job, take_chunks

pytestmark = pytest.mark.django_db(transaction=True)


def test_record_writes_rows_and_counters_in_step(owner: Any) -> None:
    job = make_job(owner, 6)
    claim = joined("w")
    take_chunks(claim)

    recorded = records.record_results(claim, [fetched(2), fetched(0, "failed", 500), fetched(5, "failed", None)])

    assert [row.position for row in recorded.results] == [0, 2, 5]
    assert (recorded.job.succeeded, recorded.job.failed) == (1, 2)
    row = Result.objects.get(job=job, position=0)
    assert (row.outcome, row.status_code, row.bytes, row.elapsed_ms, row.attempts) == ("failed", 500, 12, 3, 1)
    assert row.error.startswith("http_status: 500") and row.fetched_at is not None
    assert Result.objects.get(job=job, position=5).status_code is None
    assert_counters_match_rows(job)


def test_record_only_writes_rows_still_pending(owner: Any) -> None:
    job = make_job(owner, 4)
    claim = joined("w")
    take_chunks(claim)
    records.record_results(claim, [fetched(0), fetched(1, "failed", 503)])

    again = records.record_results(claim, [fetched(1), fetched(0, "failed", 500), fetched(2)])

    assert [row.position for row in again.results] == [2]
    assert Result.objects.get(job=job, position=1).outcome == "failed"  # first answer stays
    assert_counters_match_rows(job)
    assert (again.job.succeeded, again.job.failed) == (2, 1)


def test_a_second_row_for_one_url_is_impossible(owner: Any) -> None:
    """The unique (job, position) constraint: even a write that bypasses record_results cannot double a URL."""
    job = make_job(owner, 2)
    with pytest.raises(IntegrityError), transaction.atomic():
        Result.objects.create(job=job, position=1, url="http://127.0.0.1:9/1", outcome="succeeded")
    assert Result.objects.filter(job=job).count() == 2


def test_counters_equal_rows_over_random_batches(owner: Any) -> None:
    rng = random.Random(1234)
    job = make_job(owner, 300)
    claim = joined("w")
    take_chunks(claim)
    for _ in range(12):
        positions = rng.sample(range(300), 60)  # overlapping batches: some rows answered twice
        batch = [fetched(p, rng.choice(["succeeded", "failed"])) for p in positions]
        records.record_results(claim, batch)
        assert_counters_match_rows(job)
    assert job.succeeded + job.failed == Result.objects.filter(job=job).exclude(outcome="pending").count() > 150


def test_record_uses_the_same_few_queries_for_any_batch_size(owner: Any, django_assert_max_num_queries: Any) -> None:
    job = make_job(owner, 600)
    claim = joined("w")
    take_chunks(claim)
    # Job lock, share, held chunks, rows, counters, plus the transaction's own statements.
    with django_assert_max_num_queries(8):
        records.record_results(claim, [fetched(0)])
    with django_assert_max_num_queries(8):
        records.record_results(claim, [fetched(p) for p in range(1, 501)])
    assert_counters_match_rows(job)


def test_record_writes_the_fetch_details(owner: Any) -> None:
    """final_url, content_type, sha256, redirects, error_class and the body name reach the row (both SQL paths)."""
    job = make_job(owner, 2)
    claim = joined("w1")
    take_chunks(claim)
    done = FetchResult(
        position=0, url="http://127.0.0.1:9/0", outcome="succeeded", status_code=200, bytes=3, elapsed_ms=5,
        attempts=2, error="(attempt 1: timeout: slow)", final_url="http://127.0.0.1:9/final",
        content_type="text/plain; charset=utf-8", sha256="ab" * 32, redirects=2, body_path="bodies/x/0",
    )  # fmt: skip
    blocked = FetchResult(
        position=1, url="http://127.0.0.1:9/1", outcome="failed", status_code=None, bytes=0, elapsed_ms=0,
        attempts=0, error="blocked: 127.0.0.1 is a loopback address", error_class="blocked",
    )  # fmt: skip
    records.record_results(claim, [done, blocked])

    rows = {row.position: row for row in Result.objects.filter(job=job)}
    assert (rows[0].final_url, rows[0].content_type, rows[0].sha256, rows[0].redirects, rows[0].body) == (
        "http://127.0.0.1:9/final", "text/plain; charset=utf-8", "ab" * 32, 2, "bodies/x/0"
    )
    assert (rows[0].attempts, rows[0].error, rows[0].error_class) == (2, "(attempt 1: timeout: slow)", "")
    assert (rows[1].outcome, rows[1].error_class, rows[1].attempts) == ("failed", "blocked", 0)


def test_a_shared_job_is_cancelled_when_its_last_worker_has_stopped(owner: Any, settings: Any) -> None:
    settings.WORKER_CHUNK_SIZE = 2
    job = make_job(owner, 4, concurrency=2)
    a, b = joined("a"), joined("b")
    control.request_cancel(job.pk)

    assert records.leave_job(a, "cancel").status == Job.Status.CANCELLING  # b may still have requests in flight
    assert records.leave_job(b, "cancel").status == Job.Status.CANCELLED
    assert_counters_match_rows(job)


def test_a_shared_job_completes_when_its_last_url_is_recorded(owner: Any, settings: Any) -> None:
    settings.WORKER_CHUNK_SIZE = 2
    job = make_job(owner, 4, concurrency=2)
    a, b = joined("a"), joined("b")
    assert claims.claim_chunk(a) is not None and claims.claim_chunk(b) is not None
    records.record_results(a, [fetched(0), fetched(1)])

    assert records.leave_job(a, "done").status == Job.Status.RUNNING  # b's URLs are still pending
    records.record_results(b, [fetched(2), fetched(3)])
    done = records.leave_job(b, "done")

    assert done.status == Job.Status.COMPLETED and done.finished_at is not None
    assert not Share.objects.filter(job=job).exists()
    assert_counters_match_rows(job)


def test_leaving_with_urls_left_queues_the_job_again(owner: Any) -> None:
    job = make_job(owner, 2)
    claim = joined("w")
    take_chunks(claim)
    records.record_results(claim, [fetched(0)])

    left = records.leave_job(claim, "done")  # e.g. a chunk claim whose answer was lost

    assert left.status == Job.Status.QUEUED and left.finished_at is None
    again = joined("w")
    assert take_chunks(again) == [1]
    records.record_results(again, [fetched(1)])
    assert records.leave_job(again, "done").status == Job.Status.COMPLETED
    assert_counters_match_rows(job)


def test_failing_a_job_records_the_error_and_cancels_what_is_left(owner: Any) -> None:
    job = make_job(owner, 3)
    claim = joined("w")
    take_chunks(claim)
    records.record_results(claim, [fetched(0)])

    failed = records.leave_job(claim, "done", error="RuntimeError: boom")

    assert (failed.status, failed.error, failed.cancelled) == (Job.Status.FAILED, "RuntimeError: boom", 2)
    assert_counters_match_rows(job)


def test_stopping_requeues_with_what_is_left(owner: Any) -> None:
    job = make_job(owner, 3)
    claim = joined("stopping")
    take_chunks(claim)
    records.record_results(claim, [fetched(1)])

    released = records.leave_job(claim, "stop")

    assert released.status == Job.Status.QUEUED and not Share.objects.filter(job=job).exists()
    chunk = Chunk.objects.get(job=job)
    assert (chunk.share_id, chunk.claims) == (None, 0)  # a clean hand-back is not a crash: no step towards poison
    again = joined("next")
    assert again.job_id == job.pk and take_chunks(again) == [0, 2]
    assert_counters_match_rows(job)


def test_stopping_finishes_a_job_with_nothing_left_or_being_cancelled(owner: Any) -> None:
    done_job, cancel_job = make_job(owner, 1, concurrency=1), make_job(owner, 2, concurrency=1)
    done_claim, cancel_claim = joined("w"), joined("w")
    take_chunks(done_claim)
    records.record_results(done_claim, [fetched(0)])
    control.request_cancel(cancel_job.pk)

    assert records.leave_job(done_claim, "stop").status == Job.Status.COMPLETED
    assert records.leave_job(cancel_claim, "stop").status == Job.Status.CANCELLED
    assert_counters_match_rows(done_job)
    assert_counters_match_rows(cancel_job)


def test_a_shared_job_is_paused_when_its_last_worker_has_drained(owner: Any, settings: Any) -> None:
    settings.WORKER_CHUNK_SIZE = 2
    job = make_job(owner, 4, concurrency=2)
    a, b = joined("a"), joined("b")
    assert claims.claim_chunk(a) is not None and claims.claim_chunk(b) is not None
    records.record_results(a, [fetched(0)])
    assert control.request_pause(job.pk).status == Job.Status.PAUSING

    assert records.leave_job(a, "pause").status == Job.Status.PAUSING  # b's requests may still be in flight
    assert records.leave_job(b, "pause").status == Job.Status.PAUSED
    assert claims.claim_job("c") is None  # a paused job is nobody's
    assert list(Chunk.objects.filter(job=job).values_list("claims", flat=True)) == [0, 0]  # clean hand-backs

    assert control.request_resume(job.pk).status == Job.Status.QUEUED
    again = joined("c")
    assert again.job.status == Job.Status.RUNNING and take_chunks(again) == [1, 2, 3]
