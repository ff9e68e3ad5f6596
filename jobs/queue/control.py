"""Control of a job from outside the workers: enqueue it, request a cancel, pause or resume, finish it.

These are the status changes users ask for (jobs/submission/ calls them); a
worker running the job sees them at its next `check_share` and acts on them.
`_finish` is the one way to a terminal status, also for the workers
(claims.py on poison, records.py on the way out).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from jobs import conf
from jobs.models import Chunk, Job, Result
from jobs.queue.bulkinsert import insert_pending_results


def enqueue_job(
    *, owner: AbstractBaseUser, urls: Sequence[str], name: str, concurrency: int, timeout: float,
    options: Mapping[str, Any] | None = None,
) -> Job:
    """Store a job and one pending Result per URL, all or nothing. `options`: Job's fetch-option fields."""
    with transaction.atomic():
        job = Job.objects.create(
            owner=owner, name=name, concurrency=concurrency, timeout=timeout, total=len(urls), **(options or {})
        )
        insert_pending_results(job, urls)  # bulk_create measured 5-8x slower for 100k URLs (jobs/queue/bulkinsert.py)
        size = int(conf.get("WORKER_CHUNK_SIZE"))
        Chunk.objects.bulk_create(
            Chunk(job=job, start=start, end=min(start + size, len(urls))) for start in range(0, len(urls), size)
        )
    return job


def request_cancel(job_id: uuid.UUID | str) -> Job:
    """Cancel a job: a queued one at once, a running one via `cancelling`.

    A running job stays `cancelling` until its worker has really stopped (the
    worker then marks it `cancelled`), so a client that sees `cancelled` knows
    no further request will be made. Terminal jobs are left as they are.
    """
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.status == Job.Status.QUEUED:
            _cancel_pending(job)
            job.status = Job.Status.CANCELLED
            job.finished_at = timezone.now()
            job.save()
        elif job.status in (Job.Status.RUNNING, Job.Status.PAUSING):
            job.status = Job.Status.CANCELLING
            job.save(update_fields=["status"])
        elif job.status == Job.Status.PAUSED:
            # No worker holds a paused job: cancel it here, like a queued one.
            _finish(job, Job.Status.CANCELLED, timezone.now())
    return job


def request_pause(job_id: uuid.UUID | str) -> Job:
    """Pause a job: a queued one at once, a running one via `pausing`.

    A `pausing` job starts no new request; its worker lets those in flight
    finish, records them, then releases the job as `paused` (no worker holds
    it). Other statuses are left as they are; the caller tells them apart.
    """
    return _move(job_id, {Job.Status.QUEUED: Job.Status.PAUSED, Job.Status.RUNNING: Job.Status.PAUSING})


def request_resume(job_id: uuid.UUID | str) -> Job:
    """Resume a paused job: `paused` becomes `queued` (for any worker to claim).

    A job still `pausing` goes back to `running`: its worker releases it as
    `queued` once its in-flight requests finished, and it is claimed again.
    Other statuses are left as they are.
    """
    return _move(job_id, {Job.Status.PAUSED: Job.Status.QUEUED, Job.Status.PAUSING: Job.Status.RUNNING})


def _move(job_id: uuid.UUID | str, moves: Mapping[str, str]) -> Job:
    """Change the job's status by `moves` (from -> to) under its row lock; other statuses stay."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.status in moves:
            job.status = moves[job.status]
            job.save(update_fields=["status"])
    return job


def _cancel_pending(job: Job) -> None:
    """Mark the job's pending rows cancelled and count them (in the caller's transaction)."""
    n = Result.objects.filter(job=job, outcome=Result.Outcome.PENDING).update(
        outcome=Result.Outcome.CANCELLED, fetched_at=timezone.now()
    )
    job.cancelled += n


def _finish(job: Job, status: str, now: datetime, *, error: str = "") -> None:
    """Move `job` to a terminal status (in the caller's transaction), cancelling its pending rows."""
    if status != Job.Status.COMPLETED:
        _cancel_pending(job)
    job.status = status
    job.error = error
    job.finished_at = now
    job.save(update_fields=["status", "error", "finished_at", "cancelled"])


arequest_pause = database_sync_to_async(request_pause)
arequest_resume = database_sync_to_async(request_resume)
