"""Joining jobs and claiming their chunks (jobs.queue.claims) on the real database.

Transactional tests throughout: claims run in their own transactions, from
several threads and processes, exactly as in production.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connections
from django.db.models import Count
from django.utils import timezone

from jobs.models import Chunk, Job, Share
from jobs.queue import claims, control, records, requestlines
from jobs.requestdata import LineRecord
from tests import services
from tests.queue.conftest import assert_counters_match_rows, expire_shares, fetched, joined, make_job, take_chunks

pytestmark = pytest.mark.django_db(transaction=True)


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
    from jobs.queue import claims
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


def test_a_chunk_of_a_job_with_line_requests_carries_the_overrides_of_its_pending_lines(owner: Any) -> None:
    job = make_job(owner, 6)
    Job.objects.filter(pk=job.pk).update(line_requests=True)
    requestlines.insert_lines(job, [
        LineRecord(position=1, method="POST", body='{"n": 1}'),
        LineRecord(position=3, headers=[["X-Trace", "abc"], ["Authorization", None]], sealed_headers="sealed"),
        LineRecord(position=4, method="PUT", body=""),
    ])  # fmt: skip
    first = joined("w")
    assert claims.claim_chunk(first) is not None
    records.record_results(first, [fetched(4)])
    records.leave_job(first, "stop")

    chunk = claims.claim_chunk(joined("next"))

    assert chunk is not None and [position for position, _ in chunk.items] == [0, 1, 2, 3, 5]
    assert chunk.lines == [  # line 4 is recorded already: its override is not read
        (1, "POST", None, "", '{"n": 1}'),
        (3, "", [["X-Trace", "abc"], ["Authorization", None]], "sealed", None),
    ]


def test_a_chunk_of_plain_lines_reads_no_overrides(owner: Any) -> None:
    make_job(owner, 3)
    chunk = claims.claim_chunk(joined("w"))
    assert chunk is not None and len(chunk.items) == 3 and chunk.lines == []


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
