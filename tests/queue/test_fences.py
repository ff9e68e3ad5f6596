"""The fences of work under a share (jobs.queue.fences): the job lock, lost shares, chunks not held.

Transactional tests throughout: claims run in their own transactions, from
several threads and processes, exactly as in production.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction
from django.db.transaction import TransactionManagementError

from jobs.exceptions import ClaimLost
from jobs.models import Job, Result, Share
from jobs.queue import claims, fences, records, shares
from tests.queue.conftest import assert_counters_match_rows, expire_shares, fetched, joined, make_job, take_chunks

pytestmark = pytest.mark.django_db(transaction=True)


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
