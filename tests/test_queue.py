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
from django.db.models import Count, Sum
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from jobs.engine.fetcher import FetchResult
from jobs.exceptions import ClaimLost
from jobs.models import Chunk, Job, Result, Share
from jobs.queue import claims, control, fences, records, shares
from tests import services

pytestmark = pytest.mark.django_db(transaction=True)


def make_job(owner: Any, n: int = 5, *, concurrency: int = 2) -> Job:
    return control.enqueue_job(
        owner=owner, urls=[f"http://127.0.0.1:9/{i}" for i in range(n)], name="", concurrency=concurrency, timeout=1
    )


def fetched(position: int, outcome: str = "succeeded", status: int | None = 200) -> FetchResult:
    error = "" if outcome == "succeeded" else "http_status: 500 Internal Server Error"
    return FetchResult(
        position=position, url=f"http://127.0.0.1:9/{position}", outcome=outcome, status_code=status,
        bytes=12, elapsed_ms=3, attempts=1, error=error,
    )  # fmt: skip


def expire_shares(job: Job) -> None:
    """What a crashed worker leaves behind: its share's lease runs out."""
    Share.objects.filter(job=job).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def take_chunks(claim: fences.Claim) -> list[int]:
    """Claim every chunk left for `claim`; return the pending positions handed over."""
    positions: list[int] = []
    while (chunk := claims.claim_chunk(claim)) is not None:
        positions += [position for position, _ in chunk.items]
    return positions


def joined(worker_id: str, **kwargs: Any) -> fences.Claim:
    claim = claims.claim_job(worker_id, **kwargs)
    assert claim is not None
    return claim


def assert_counters_match_rows(job: Job) -> None:
    job.refresh_from_db()
    rows = dict(Result.objects.filter(job=job).values_list("outcome").annotate(n=Count("id")))
    assert job.total == sum(rows.values())
    assert (job.succeeded, job.failed, job.cancelled) == (
        rows.get("succeeded", 0), rows.get("failed", 0), rows.get("cancelled", 0)
    )  # fmt: skip


# --- joining jobs ----------------------------------------------------------------------


def test_claim_takes_the_oldest_queued_job_and_gives_it_a_share(owner: Any) -> None:
    first, second = make_job(owner, concurrency=1), make_job(owner, concurrency=1)
    before = timezone.now()

    claim = claims.claim_job("w1", lease_seconds=30)

    assert claim is not None and claim.job_id == first.pk and claim.slots == 1
    first.refresh_from_db()
    assert first.status == Job.Status.RUNNING
    assert first.started_at is not None and first.started_at >= before
    share = Share.objects.get(job=first)
    assert (share.worker_id, share.token, share.slots) == ("w1", claim.token, 1)
    assert before + timedelta(seconds=29) < share.lease_expires_at <= timezone.now() + timedelta(seconds=30)
    assert joined("w2").job_id == second.pk
    assert claims.claim_job("w3") is None  # each job's one slot is taken


def test_a_live_share_keeps_its_chunk_an_expired_one_is_taken_over(owner: Any) -> None:
    job = make_job(owner, concurrency=1)
    old = joined("crashed", lease_seconds=30)
    assert take_chunks(old) == [0, 1, 2, 3, 4]
    assert claims.claim_job("other") is None

    expire_shares(job)
    new = joined("other")

    assert new.job_id == job.pk and new.token != old.token and new.slots == 1
    assert list(Share.objects.filter(job=job).values_list("worker_id", flat=True)) == ["other"]
    assert take_chunks(new) == [0, 1, 2, 3, 4]
    chunk = Chunk.objects.get(job=job)
    assert (chunk.worker_id, chunk.claims) == ("other", 2)
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and job.started_at == old.job.started_at  # the first start stays


def test_threads_never_claim_the_same_job(owner: Any) -> None:
    jobs = {make_job(owner, 1, concurrency=1).pk for _ in range(30)}
    claimed: list[uuid.UUID] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def claim_all(name: str) -> None:
        try:
            start.wait()
            while (claim := claims.claim_job(name)) is not None:
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
    assert set(Share.objects.values_list("job").annotate(n=Count("pk")).values_list("n", flat=True)) == {1}


CLAIMER = textwrap.dedent(
    """
    import os, sys, time
    import django
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    django.setup()
    from jobs.queue import claims, control, fences, records, shares
    print("ready", flush=True)
    sys.stdin.readline()  # the go signal: all processes start claiming together
    while (claim := claims.claim_job(sys.argv[1])) is not None:
        print(claim.job_id, flush=True)
        # A worker does work between claims. Without a pause, SQLite's busy handler lets the process
        # that holds the write lock win every claim, and the race would not be exercised.
        time.sleep(0.02)
    """
)


def test_processes_never_claim_the_same_job(owner: Any, live_database_url: str) -> None:
    jobs = {str(make_job(owner, 1, concurrency=1).pk) for _ in range(40)}
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


# --- sharing one job --------------------------------------------------------------------


def test_workers_share_a_large_job_chunk_by_chunk(owner: Any, settings: Any) -> None:
    settings.WORKER_CHUNK_SIZE = 10
    job = make_job(owner, 35, concurrency=4)
    assert list(Chunk.objects.filter(job=job).values_list("start", "end")) == [(0, 10), (10, 20), (20, 30), (30, 35)]
    a = joined("a")
    b = joined("b")  # a running job with a free chunk takes a second worker

    assert b.job_id == a.job_id == job.pk and (a.slots, b.slots) == (4, 0)  # b grows into what a gives back
    taken = {"a": claims.claim_chunk(a), "b": claims.claim_chunk(b)}
    assert {name: (chunk.start, chunk.end) for name, chunk in taken.items() if chunk} == {"a": (0, 10), "b": (10, 20)}
    rest_a, rest_b = take_chunks(a), take_chunks(b)
    handed = sorted([*rest_a, *rest_b, *(p for chunk in taken.values() if chunk for p, _ in chunk.items)])
    assert handed == list(range(35))  # every URL handed to exactly one worker
    assert claims.claim_job("c") is None  # nothing left to share
    assert set(Chunk.objects.filter(job=job).values_list("worker_id", flat=True)) == {"a", "b"}


def test_a_worker_already_in_a_job_does_not_join_it_twice(owner: Any, settings: Any) -> None:
    settings.WORKER_CHUNK_SIZE = 2
    job = make_job(owner, 6, concurrency=3)
    assert joined("a").job_id == job.pk
    assert claims.claim_job("a") is None
    assert claims.claim_job("a", exclude=[job.pk]) is None
    assert joined("b").job_id == job.pk


def sum_of_slots(job: Job) -> int:
    return Share.objects.filter(job=job).aggregate(n=Sum("slots"))["n"] or 0


def test_slots_are_rebalanced_without_ever_exceeding_the_concurrency(owner: Any, settings: Any) -> None:
    settings.WORKER_CHUNK_SIZE = 2
    job = make_job(owner, 20, concurrency=4)
    a = joined("a")
    b = joined("b")
    assert (a.slots, b.slots, sum_of_slots(job)) == (4, 0, 4)

    assert shares.check_share(b, in_flight=0, applied=0).slots == 0  # nothing free yet
    told = shares.check_share(a, in_flight=4, applied=4)
    assert told.slots == 2 and sum_of_slots(job) == 4  # a must shrink to its fair part, but 4 are in flight
    assert shares.check_share(a, in_flight=3, applied=2).slots == 2 and sum_of_slots(job) == 4  # still 3 in flight
    assert shares.check_share(a, in_flight=2, applied=2).slots == 2
    assert Share.objects.get(token=a.token).slots == 2  # given back once its requests fit
    assert shares.check_share(b, in_flight=0, applied=0).slots == 2  # b grows into them
    assert sum_of_slots(job) == 4

    records.leave_job(a, "stop")  # a leaves: b may take the whole concurrency
    assert shares.check_share(b, in_flight=2, applied=2).slots == 4 and sum_of_slots(job) == 4


def test_slots_never_exceed_the_workers_own_limit(owner: Any) -> None:
    job = make_job(owner, 5, concurrency=50)
    claim = joined("small", max_slots=8)
    assert claim.slots == 8 and sum_of_slots(job) == 8
    assert shares.check_share(claim, in_flight=0, applied=8, max_slots=8).slots == 8


def test_a_worker_cannot_record_urls_of_a_chunk_it_does_not_hold(owner: Any, settings: Any) -> None:
    settings.WORKER_CHUNK_SIZE = 3
    job = make_job(owner, 6, concurrency=2)
    a, b = joined("a"), joined("b")
    assert claims.claim_chunk(a) is not None and claims.claim_chunk(b) is not None  # a: 0-2, b: 3-5

    with pytest.raises(ClaimLost, match="URL 1 is no longer held"):
        records.record_results(b, [fetched(3), fetched(0)])  # before b's chunk
    with pytest.raises(ClaimLost, match="URL 4 is no longer held"):
        records.record_results(a, [fetched(2), fetched(3)])  # just past a's chunk (its end is exclusive)

    assert not Result.objects.filter(job=job).exclude(outcome="pending").exists()  # all or nothing
    records.record_results(b, [fetched(3)])
    assert_counters_match_rows(job)


def test_the_job_lock_is_taken_inside_a_transaction_only(owner: Any) -> None:
    """As select_for_update() would: outside a transaction the row lock would end with the statement."""
    job = make_job(owner, 1)
    with pytest.raises(TransactionManagementError):
        fences._locked_job(job.pk)
    with transaction.atomic():
        assert fences._locked_job(job.pk).pk == job.pk


def test_a_share_whose_lease_expired_is_lost_even_before_a_takeover(owner: Any) -> None:
    job = make_job(owner, 3)
    claim = joined("stalled")
    take_chunks(claim)
    expire_shares(job)

    for call in (
        lambda: records.record_results(claim, [fetched(0)]),
        lambda: shares.check_share(claim, in_flight=0, applied=2),
        lambda: claims.claim_chunk(claim),
        lambda: records.leave_job(claim, "done"),
    ):
        with pytest.raises(ClaimLost):
            call()
    assert not Result.objects.filter(job=job).exclude(outcome="pending").exists()
    assert joined("next").job_id == job.pk  # an orphaned job is taken over


def test_claim_then_cancel_keeps_cancelling_for_the_next_worker(owner: Any) -> None:
    job = make_job(owner)
    joined("crashed")
    control.request_cancel(job.pk)
    expire_shares(job)

    claim = joined("other")

    assert claim.job.status == Job.Status.CANCELLING
    assert list(Share.objects.filter(job=job).values_list("worker_id", flat=True)) == ["other"]
    assert records.leave_job(claim, "cancel").status == Job.Status.CANCELLED


@pytest.mark.parametrize("max_claims", [1, 3])
def test_a_chunk_claimed_too_often_fails_the_job_as_poison(owner: Any, settings: Any, max_claims: int) -> None:
    settings.WORKER_MAX_CLAIMS = max_claims
    poison, healthy = make_job(owner, 3), make_job(owner, 2)
    for _ in range(max_claims):
        claim = joined("doomed")
        assert claim.job_id == poison.pk
        assert claims.claim_chunk(claim) is not None
        records.record_results(claim, [fetched(0)])  # progress survives the crashes
        expire_shares(poison)

    claim = joined("next")  # the orphaned job is taken over, but its chunk is not handed out again
    assert claim.job_id == poison.pk
    assert claims.claim_chunk(claim) is None

    poison.refresh_from_db()
    assert poison.status == Job.Status.FAILED and poison.finished_at is not None
    assert f"after {max_claims} claims of URLs 1-3" in poison.error
    assert (poison.succeeded, poison.cancelled) == (1, 2)
    assert_counters_match_rows(poison)
    assert records.leave_job(claim, "done").status == Job.Status.FAILED
    assert not Share.objects.filter(job=poison).exists()
    assert joined("later").job_id == healthy.pk


# --- recording, fenced by the share -------------------------------------------------------


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


def test_stale_share_is_rejected_and_writes_nothing(owner: Any) -> None:
    job = make_job(owner, 3, concurrency=1)
    stale = joined("slow")
    take_chunks(stale)
    expire_shares(job)
    fresh = joined("fast")
    assert take_chunks(fresh) == [0, 1, 2]

    for call in (
        lambda: records.record_results(stale, [fetched(0)]),
        lambda: shares.check_share(stale, in_flight=0, applied=1, renew=True),
        lambda: claims.claim_chunk(stale),
        lambda: records.leave_job(stale, "done"),
        lambda: records.leave_job(stale, "stop"),
    ):
        with pytest.raises(ClaimLost):
            call()

    assert not Result.objects.filter(job=job).exclude(outcome="pending").exists()
    job.refresh_from_db()
    assert (job.status, job.succeeded) == (Job.Status.RUNNING, 0)
    assert list(Share.objects.filter(job=job).values_list("worker_id", flat=True)) == ["fast"]
    records.record_results(fresh, [fetched(0)])
    assert_counters_match_rows(job)


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


def test_check_renews_the_lease_and_reports_the_status(owner: Any) -> None:
    job = make_job(owner)
    claim = joined("w", lease_seconds=5)
    first_lease = Share.objects.get(token=claim.token).lease_expires_at

    assert shares.check_share(claim, in_flight=0, applied=2).status == Job.Status.RUNNING
    assert Share.objects.get(token=claim.token).lease_expires_at == first_lease  # renewed only when asked
    assert shares.check_share(claim, in_flight=0, applied=2, renew=True).status == Job.Status.RUNNING
    assert Share.objects.get(token=claim.token).lease_expires_at > first_lease + timedelta(seconds=20)

    control.request_cancel(job.pk)
    assert shares.check_share(claim, in_flight=0, applied=2).status == Job.Status.CANCELLING


def test_a_chunk_is_handed_over_with_only_its_pending_urls(owner: Any) -> None:
    job = make_job(owner, 7)
    claim = joined("w")
    chunk = claims.claim_chunk(claim)
    assert chunk is not None and (chunk.start, chunk.end) == (0, 7)
    assert chunk.items[0] == (0, "http://127.0.0.1:9/0")
    records.record_results(claim, [fetched(1), fetched(4)])
    records.leave_job(claim, "stop")

    again = joined("next")
    assert take_chunks(again) == [0, 2, 3, 5, 6]
    assert Chunk.objects.get(job=job).claims == 1  # the clean hand-back did not count


def test_chunks_with_nothing_pending_are_marked_done(owner: Any, settings: Any) -> None:
    settings.WORKER_CHUNK_SIZE = 2
    job = make_job(owner, 5)
    claim = joined("w")
    take_chunks(claim)
    records.record_results(claim, [fetched(0), fetched(1), fetched(2)])

    assert claims.claim_chunk(claim) is None
    assert list(Chunk.objects.filter(job=job).values_list("start", "done")) == [(0, True), (2, False), (4, False)]


def test_a_lapsed_shares_chunk_with_nothing_pending_is_marked_done_and_the_next_one_claimed(
    owner: Any, settings: Any
) -> None:
    settings.WORKER_CHUNK_SIZE = 2
    job = make_job(owner, 6)
    a = joined("a")
    claims.claim_chunk(a), claims.claim_chunk(a)
    records.record_results(a, [fetched(0), fetched(1)])  # chunk 0 finished, but not yet marked done
    b = joined("b")
    Share.objects.filter(token=a.token).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    chunk = claims.claim_chunk(b)

    assert chunk is not None and (chunk.start, chunk.end) == (2, 4)
    assert [position for position, _url in chunk.items] == [2, 3]
    share_b = Share.objects.get(token=b.token).pk
    assert list(Chunk.objects.filter(job=job).values_list("start", "done", "share_id", "claims")) == [
        (0, True, Share.objects.get(token=a.token).pk, 1), (2, False, share_b, 2), (4, False, None, 0)
    ]  # fmt: skip
    assert take_chunks(b) == [4, 5]


# --- leaving: finishing, cancelling, handing back -------------------------------------------


def test_cancel_of_a_queued_job_is_immediate(owner: Any) -> None:
    job = make_job(owner, 4)

    cancelled = control.request_cancel(job.pk)

    assert cancelled.status == Job.Status.CANCELLED and cancelled.finished_at is not None
    assert set(Result.objects.filter(job=job).values_list("outcome", flat=True)) == {"cancelled"}
    assert_counters_match_rows(job)
    assert claims.claim_job("w") is None


def test_cancel_of_a_running_job_waits_for_its_worker(owner: Any) -> None:
    job = make_job(owner, 4)
    claim = joined("w")
    take_chunks(claim)
    records.record_results(claim, [fetched(0)])

    assert control.request_cancel(job.pk).status == Job.Status.CANCELLING
    # The worker still records what was in flight, then finishes the cancel.
    records.record_results(claim, [fetched(1, "failed", 404)])
    finished = records.leave_job(claim, "cancel")

    assert finished.status == Job.Status.CANCELLED and not Share.objects.filter(job=job).exists()
    assert (finished.succeeded, finished.failed, finished.cancelled) == (1, 1, 2)
    assert_counters_match_rows(job)


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


def test_cancel_leaves_terminal_jobs_alone(owner: Any) -> None:
    job = make_job(owner, 1)
    claim = joined("w")
    take_chunks(claim)
    records.record_results(claim, [fetched(0)])
    records.leave_job(claim, "done")

    assert control.request_cancel(job.pk).status == Job.Status.COMPLETED
    job.refresh_from_db()
    assert job.status == Job.Status.COMPLETED and job.cancelled == 0


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
