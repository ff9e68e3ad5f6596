"""Fair claim order (claims.fair_order): one user's many jobs cannot starve another's.

Runs on SQLite (writers serialized) and on PostgreSQL (SKIP LOCKED claim) under `make test`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from jobs.models import Chunk, Job, Share
from jobs.queue import claims, control

pytestmark = pytest.mark.django_db(transaction=True)


def make_jobs(owner: Any, count: int, *, minutes_ago: int) -> list[Job]:
    jobs = []
    for i in range(count):
        job = control.enqueue_job(owner=owner, urls=["http://a.example/"], name=f"{owner}-{i}", concurrency=1, timeout=1)
        job.created_at = timezone.now() - timedelta(minutes=minutes_ago - i)
        job.save(update_fields=["created_at"])
        jobs.append(job)
    return jobs


def claimed_owner() -> str:
    claim = claims.claim_job("worker-1")
    assert claim is not None
    return Job.objects.get(pk=claim.job_id).owner.username


def test_a_late_single_job_is_claimed_before_the_heavy_users_backlog(django_user_model: Any) -> None:
    heavy, light = (django_user_model.objects.create_user(username=name) for name in ("heavy", "light"))
    make_jobs(heavy, 5, minutes_ago=30)  # queued long before light's job
    make_jobs(light, 1, minutes_ago=1)

    order = [claimed_owner() for _ in range(3)]

    # Oldest first while nobody runs anything; then the owner with fewer running jobs wins.
    assert order == ["heavy", "light", "heavy"]


def test_users_alternate_and_each_user_keeps_oldest_first(django_user_model: Any) -> None:
    ann, bob = (django_user_model.objects.create_user(username=name) for name in ("ann", "bob"))
    ann_jobs = make_jobs(ann, 3, minutes_ago=20)
    bob_jobs = make_jobs(bob, 3, minutes_ago=10)

    taken = [claims.claim_job("worker-1") for _ in range(6)]

    assert [claim.job_id for claim in taken if claim] == [
        ann_jobs[0].pk, bob_jobs[0].pk, ann_jobs[1].pk, bob_jobs[1].pk, ann_jobs[2].pk, bob_jobs[2].pk,
    ]
    assert claims.claim_job("worker-1") is None


def test_a_crashed_workers_job_does_not_count_as_running(django_user_model: Any) -> None:
    ann, bob = (django_user_model.objects.create_user(username=name) for name in ("ann", "bob"))
    stale = make_jobs(ann, 1, minutes_ago=30)[0]
    Job.objects.filter(pk=stale.pk).update(status=Job.Status.RUNNING)
    crashed = Share.objects.create(
        job=stale, worker_id="crashed", lease_expires_at=timezone.now() - timedelta(minutes=1), slots=1
    )
    Chunk.objects.filter(job=stale).update(share=crashed, worker_id="crashed", claims=1)
    make_jobs(ann, 1, minutes_ago=20)
    make_jobs(bob, 1, minutes_ago=10)

    # ann's expired job is claimable again and oldest; ann has no live share, so it goes first.
    first = claims.claim_job("worker-1")
    assert first is not None and first.job_id == stale.pk
    assert not Share.objects.filter(pk=crashed.pk).exists()  # the lapsed share was deleted, freeing its chunk
    assert claimed_owner() == "bob"
