"""The durable queue on the real database (SQLite by default, PostgreSQL with DATABASE_URL).

Transactional tests throughout: claims run in their own transactions, from
several threads and processes, exactly as in production.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import IntegrityError, connections, transaction
from django.db.models import Count
from django.utils import timezone

from jobs import queue
from jobs.exceptions import ClaimLost, JobStateError
from jobs.fetcher import FetchResult
from jobs.models import Job, Result
from tests import services

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def owner(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="owner")


def make_job(owner: Any, n: int = 5, *, concurrency: int = 2) -> Job:
    return queue.enqueue_job(
        owner=owner, urls=[f"http://127.0.0.1:9/{i}" for i in range(n)], name="", concurrency=concurrency, timeout=1
    )


def fetched(position: int, outcome: str = "succeeded", status: int | None = 200) -> FetchResult:
    error = "" if outcome == "succeeded" else "http_status: 500 Internal Server Error"
    return FetchResult(
        position=position, url=f"http://127.0.0.1:9/{position}", outcome=outcome, status_code=status,
        bytes=12, elapsed_ms=3, attempts=1, error=error,
    )  # fmt: skip


def expire_lease(job: Job) -> None:
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def assert_counters_match_rows(job: Job) -> None:
    job.refresh_from_db()
    rows = dict(Result.objects.filter(job=job).values_list("outcome").annotate(n=Count("id")))
    assert job.total == sum(rows.values())
    assert (job.succeeded, job.failed, job.cancelled) == (
        rows.get("succeeded", 0), rows.get("failed", 0), rows.get("cancelled", 0)
    )  # fmt: skip


# --- claiming ----------------------------------------------------------------------


def test_claim_takes_the_oldest_queued_job_and_marks_it(owner: Any) -> None:
    first, second = make_job(owner), make_job(owner)
    before = timezone.now()

    claim = queue.claim_job("w1", lease_seconds=30)

    assert claim is not None and claim.job_id == first.pk
    first.refresh_from_db()
    assert first.status == Job.Status.RUNNING
    assert first.worker_id == "w1" and first.claim_token == claim.token and first.claims == 1
    assert first.started_at is not None and first.started_at >= before
    assert before + timedelta(seconds=29) < first.lease_expires_at <= timezone.now() + timedelta(seconds=30)
    assert queue.claim_job("w2").job_id == second.pk  # type: ignore[union-attr]
    assert queue.claim_job("w3") is None


def test_a_live_lease_is_not_claimable_an_expired_one_is(owner: Any) -> None:
    job = make_job(owner)
    old = queue.claim_job("crashed", lease_seconds=30)
    assert old is not None
    assert queue.claim_job("other") is None

    expire_lease(job)
    new = queue.claim_job("other")

    assert new is not None and new.job_id == job.pk and new.token != old.token
    job.refresh_from_db()
    assert (job.status, job.worker_id, job.claims) == (Job.Status.RUNNING, "other", 2)
    assert job.started_at == old.job.started_at  # the first start stays


def test_threads_never_claim_the_same_job(owner: Any) -> None:
    jobs = {make_job(owner, 1).pk for _ in range(30)}
    claimed: list[uuid.UUID] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def claim_all(name: str) -> None:
        try:
            start.wait()
            while (claim := queue.claim_job(name)) is not None:
                claimed.append(claim.job_id)
        except Exception as exc:  # noqa: BLE001 - a thread cannot fail the test; the assertion below does
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim_all, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors, errors
    assert sorted(claimed) == sorted(jobs)  # each job once: none twice, none missed
    assert set(Job.objects.values_list("claims", flat=True)) == {1}


CLAIMER = textwrap.dedent(
    """
    import os, sys
    import django
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    django.setup()
    from jobs import queue
    print("ready", flush=True)
    sys.stdin.readline()  # the go signal: all processes start claiming together
    while (claim := queue.claim_job(sys.argv[1])) is not None:
        print(claim.job_id, flush=True)
    """
)


def test_processes_never_claim_the_same_job(owner: Any, live_database_url: str) -> None:
    jobs = {str(make_job(owner, 1).pk) for _ in range(40)}
    env = services.product_env(database_url=live_database_url, redis_url="redis://127.0.0.1:1/0")
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, f"p{i}"],
            cwd=services.BASE_DIR,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(3)
    ]
    try:
        for process in processes:
            assert process.stdout is not None and process.stdout.readline().strip() == "ready", process.stderr
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=60) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    claimed = [line for out, _ in outputs for line in out.split()]
    assert sorted(claimed) == sorted(jobs)
    # More than one process got work, or the race was not exercised at all.
    assert sum(1 for out, _ in outputs if out.split()) >= 2


def test_claim_then_cancel_keeps_cancelling_for_the_next_worker(owner: Any) -> None:
    job = make_job(owner)
    queue.claim_job("crashed")
    queue.request_cancel(job.pk)
    expire_lease(job)

    claim = queue.claim_job("other")

    assert claim is not None and claim.job.status == Job.Status.CANCELLING
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLING and job.claims == 2


@pytest.mark.parametrize("max_claims", [1, 3])
def test_a_job_claimed_too_often_is_failed_as_poison(owner: Any, settings: Any, max_claims: int) -> None:
    settings.WORKER_MAX_CLAIMS = max_claims
    poison, healthy = make_job(owner, 3), make_job(owner, 2)
    for _ in range(max_claims):
        claim = queue.claim_job("doomed")
        assert claim is not None and claim.job_id == poison.pk
        queue.record_results(claim, [fetched(0)])  # progress survives the crashes
        expire_lease(poison)

    claim = queue.claim_job("next")

    assert claim is not None and claim.job_id == healthy.pk  # the poison job was skipped
    poison.refresh_from_db()
    assert poison.status == Job.Status.FAILED
    assert f"after {max_claims} claims" in poison.error
    assert poison.claim_token is None and poison.finished_at is not None
    assert (poison.succeeded, poison.cancelled) == (1, 2)
    assert_counters_match_rows(poison)


# --- recording, fenced by the claim token -----------------------------------------------------


def test_record_writes_rows_and_counters_in_step(owner: Any) -> None:
    job = make_job(owner, 6)
    claim = queue.claim_job("w")
    assert claim is not None

    recorded = queue.record_results(claim, [fetched(2), fetched(0, "failed", 500), fetched(5, "failed", None)])

    assert [row.position for row in recorded.results] == [0, 2, 5]
    assert (recorded.job.succeeded, recorded.job.failed) == (1, 2)
    row = Result.objects.get(job=job, position=0)
    assert (row.outcome, row.status_code, row.bytes, row.elapsed_ms, row.attempts) == ("failed", 500, 12, 3, 1)
    assert row.error.startswith("http_status: 500") and row.fetched_at is not None
    assert Result.objects.get(job=job, position=5).status_code is None
    assert_counters_match_rows(job)


def test_record_only_writes_rows_still_pending(owner: Any) -> None:
    job = make_job(owner, 4)
    claim = queue.claim_job("w")
    assert claim is not None
    queue.record_results(claim, [fetched(0), fetched(1, "failed", 503)])

    again = queue.record_results(claim, [fetched(1), fetched(0, "failed", 500), fetched(2)])

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
    claim = queue.claim_job("w")
    assert claim is not None
    for _ in range(12):
        positions = rng.sample(range(300), 60)  # overlapping batches: some rows answered twice
        batch = [fetched(p, rng.choice(["succeeded", "failed"])) for p in positions]
        queue.record_results(claim, batch)
        assert_counters_match_rows(job)
    assert job.succeeded + job.failed == Result.objects.filter(job=job).exclude(outcome="pending").count() > 150


def test_stale_claim_is_rejected_and_writes_nothing(owner: Any) -> None:
    job = make_job(owner, 3)
    stale = queue.claim_job("slow")
    assert stale is not None
    expire_lease(job)
    fresh = queue.claim_job("fast")
    assert fresh is not None

    with pytest.raises(ClaimLost):
        queue.record_results(stale, [fetched(0)])
    with pytest.raises(ClaimLost):
        queue.heartbeat(stale)
    with pytest.raises(ClaimLost):
        queue.job_status(stale)
    with pytest.raises(ClaimLost):
        queue.finish_job(stale)
    with pytest.raises(ClaimLost):
        queue.release_job(stale)

    assert not Result.objects.filter(job=job).exclude(outcome="pending").exists()
    job.refresh_from_db()
    assert (job.status, job.worker_id, job.succeeded) == (Job.Status.RUNNING, "fast", 0)
    queue.record_results(fresh, [fetched(0)])
    assert_counters_match_rows(job)


def test_record_uses_the_same_few_queries_for_any_batch_size(owner: Any, django_assert_max_num_queries: Any) -> None:
    job = make_job(owner, 600)
    claim = queue.claim_job("w")
    assert claim is not None
    # Fence (SELECT ... FOR UPDATE), rows, counters, plus the transaction's own statements.
    with django_assert_max_num_queries(6):
        queue.record_results(claim, [fetched(0)])
    with django_assert_max_num_queries(6):
        queue.record_results(claim, [fetched(p) for p in range(1, 501)])
    assert_counters_match_rows(job)


def test_heartbeat_renews_the_lease_and_reports_the_status(owner: Any) -> None:
    job = make_job(owner)
    claim = queue.claim_job("w", lease_seconds=5)
    assert claim is not None
    job.refresh_from_db()
    first_lease = job.lease_expires_at

    assert queue.heartbeat(claim, lease_seconds=60) == Job.Status.RUNNING
    job.refresh_from_db()
    assert job.lease_expires_at > first_lease + timedelta(seconds=50)

    queue.request_cancel(job.pk)
    assert queue.heartbeat(claim) == Job.Status.CANCELLING
    assert queue.job_status(claim) == Job.Status.CANCELLING


def test_pending_items_pages_through_what_is_left(owner: Any) -> None:
    make_job(owner, 7)
    claim = queue.claim_job("w")
    assert claim is not None
    queue.record_results(claim, [fetched(1), fetched(4)])

    first = queue.pending_items(claim, after=-1, limit=3)
    rest = queue.pending_items(claim, after=first[-1][0], limit=3)

    assert [p for p, _ in first + rest] == [0, 2, 3, 5, 6]
    assert first[0][1] == "http://127.0.0.1:9/0"
    assert queue.pending_items(claim, after=6) == []


# --- finishing, cancelling, releasing ---------------------------------------------------------


def test_cancel_of_a_queued_job_is_immediate(owner: Any) -> None:
    job = make_job(owner, 4)

    cancelled = queue.request_cancel(job.pk)

    assert cancelled.status == Job.Status.CANCELLED and cancelled.finished_at is not None
    assert set(Result.objects.filter(job=job).values_list("outcome", flat=True)) == {"cancelled"}
    assert_counters_match_rows(job)
    assert queue.claim_job("w") is None


def test_cancel_of_a_running_job_waits_for_its_worker(owner: Any) -> None:
    job = make_job(owner, 4)
    claim = queue.claim_job("w")
    assert claim is not None
    queue.record_results(claim, [fetched(0)])

    assert queue.request_cancel(job.pk).status == Job.Status.CANCELLING
    # The worker still records what was in flight, then finishes the cancel.
    queue.record_results(claim, [fetched(1, "failed", 404)])
    finished = queue.finish_job(claim)

    assert finished.status == Job.Status.CANCELLED and finished.claim_token is None
    assert (finished.succeeded, finished.failed, finished.cancelled) == (1, 1, 2)
    assert_counters_match_rows(job)


def test_cancel_leaves_terminal_jobs_alone(owner: Any) -> None:
    job = make_job(owner, 1)
    claim = queue.claim_job("w")
    assert claim is not None
    queue.record_results(claim, [fetched(0)])
    queue.finish_job(claim)

    assert queue.request_cancel(job.pk).status == Job.Status.COMPLETED
    job.refresh_from_db()
    assert job.status == Job.Status.COMPLETED and job.cancelled == 0


def test_complete_needs_every_row_final(owner: Any) -> None:
    job = make_job(owner, 2)
    claim = queue.claim_job("w")
    assert claim is not None
    queue.record_results(claim, [fetched(0)])
    with pytest.raises(JobStateError, match="1 URLs are still pending"):
        queue.finish_job(claim)

    queue.record_results(claim, [fetched(1)])
    done = queue.finish_job(claim)

    assert done.status == Job.Status.COMPLETED and done.finished_at is not None and done.lease_expires_at is None
    assert_counters_match_rows(job)


def test_failing_a_job_records_the_error_and_cancels_what_is_left(owner: Any) -> None:
    job = make_job(owner, 3)
    claim = queue.claim_job("w")
    assert claim is not None
    queue.record_results(claim, [fetched(0)])

    failed = queue.finish_job(claim, error="RuntimeError: boom")

    assert (failed.status, failed.error, failed.cancelled) == (Job.Status.FAILED, "RuntimeError: boom", 2)
    assert_counters_match_rows(job)


def test_release_requeues_with_what_is_left(owner: Any) -> None:
    job = make_job(owner, 3)
    claim = queue.claim_job("stopping")
    assert claim is not None
    queue.record_results(claim, [fetched(1)])

    released = queue.release_job(claim)

    assert (released.status, released.worker_id, released.claim_token, released.lease_expires_at) == (
        Job.Status.QUEUED, "", None, None
    )  # fmt: skip
    assert released.claims == 0  # a clean hand-back is not a crash: no step towards poison
    again = queue.claim_job("next")
    assert again is not None and again.job_id == job.pk
    assert [p for p, _ in queue.pending_items(again)] == [0, 2]
    assert_counters_match_rows(job)


def test_release_finishes_a_job_with_nothing_left_or_being_cancelled(owner: Any) -> None:
    done_job, cancel_job = make_job(owner, 1), make_job(owner, 2)
    done_claim, cancel_claim = queue.claim_job("w"), queue.claim_job("w")
    assert done_claim is not None and cancel_claim is not None
    queue.record_results(done_claim, [fetched(0)])
    queue.request_cancel(cancel_job.pk)

    assert queue.release_job(done_claim).status == Job.Status.COMPLETED
    assert queue.release_job(cancel_claim).status == Job.Status.CANCELLED
    assert_counters_match_rows(done_job)
    assert_counters_match_rows(cancel_job)


def test_record_writes_the_fetch_details(owner: Any) -> None:
    """final_url, content_type, sha256, redirects, error_class and the body name reach the row (both SQL paths)."""
    job = make_job(owner, 2)
    claim = queue.claim_job("w1")
    assert claim is not None
    done = FetchResult(
        position=0, url="http://127.0.0.1:9/0", outcome="succeeded", status_code=200, bytes=3, elapsed_ms=5,
        attempts=2, error="(attempt 1: timeout: slow)", final_url="http://127.0.0.1:9/final",
        content_type="text/plain; charset=utf-8", sha256="ab" * 32, redirects=2, body_path="bodies/x/0",
    )  # fmt: skip
    blocked = FetchResult(
        position=1, url="http://127.0.0.1:9/1", outcome="failed", status_code=None, bytes=0, elapsed_ms=0,
        attempts=0, error="blocked: 127.0.0.1 is a loopback address", error_class="blocked",
    )  # fmt: skip
    queue.record_results(claim, [done, blocked])

    rows = {row.position: row for row in Result.objects.filter(job=job)}
    assert (rows[0].final_url, rows[0].content_type, rows[0].sha256, rows[0].redirects, rows[0].body) == (
        "http://127.0.0.1:9/final", "text/plain; charset=utf-8", "ab" * 32, 2, "bodies/x/0"
    )
    assert (rows[0].attempts, rows[0].error, rows[0].error_class) == (2, "(attempt 1: timeout: slow)", "")
    assert (rows[1].outcome, rows[1].error_class, rows[1].attempts) == ("failed", "blocked", 0)
