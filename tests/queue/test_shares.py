"""A share's slots and lease (jobs.queue.shares) on the real database.

Transactional tests throughout: claims run in their own transactions, from
several threads and processes, exactly as in production.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db.models import Sum

from jobs.models import Job, Share
from jobs.queue import control, records, shares
from tests.queue.conftest import joined, make_job

pytestmark = pytest.mark.django_db(transaction=True)


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
