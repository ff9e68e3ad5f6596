"""Cancelling from outside the workers (jobs.queue.control) on the real database.

Transactional tests throughout: claims run in their own transactions, from
several threads and processes, exactly as in production.
"""

from __future__ import annotations

from typing import Any

import pytest

from jobs.models import Job, Result, Share
from jobs.queue import claims, control, records
from tests.queue.conftest import assert_counters_match_rows, fetched, joined, make_job, take_chunks

pytestmark = pytest.mark.django_db(transaction=True)


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


def test_cancel_leaves_terminal_jobs_alone(owner: Any) -> None:
    job = make_job(owner, 1)
    claim = joined("w")
    take_chunks(claim)
    records.record_results(claim, [fetched(0)])
    records.leave_job(claim, "done")

    assert control.request_cancel(job.pk).status == Job.Status.COMPLETED
    job.refresh_from_db()
    assert job.status == Job.Status.COMPLETED and job.cancelled == 0
