"""Job deadlines in the database: when a job's deadline falls, and failing what it left unfinished.

A job with `job_deadline` (seconds) gets `deadline_at` once, when it first
starts running (started_at + job_deadline): a stored timestamp, so every
worker sharing the job enforces the same deadline, and a worker that takes
the job over after a crash or a restart too. Pauses do not stop the clock.
When it passes, the worker that sees it first records every unfinished URL as
failed (`error_class` "deadline") and fails the job with the reason, under
the job's row lock (`claims.leave_job`); results that other workers still
send for those URLs are dropped, as for any row that is already final.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import F

from jobs.models import Job, Result

ERROR_CLASS = "deadline"


def start_clock(job: Job, now: datetime) -> None:
    """Set `deadline_at` from `job_deadline` when the job starts running (the caller saves the job)."""
    if job.deadline_at is None and job.job_deadline is not None:
        job.deadline_at = (job.started_at or now) + timedelta(seconds=job.job_deadline)


def has_passed(job: Job, now: datetime) -> bool:
    return job.deadline_at is not None and job.deadline_at <= now


def fail_unfinished(job: Job, now: datetime) -> str:
    """Record every pending row of `job` as failed by the deadline, count them, and return the job's reason.

    In the caller's transaction, with the job row locked (the counters must stay equal to the rows).
    """
    limit = f"{job.job_deadline:g} s" if job.job_deadline is not None else "its deadline"
    message = f"{ERROR_CLASS}: the job deadline ({limit} after its start) passed before this URL finished"
    unfinished = Result.objects.filter(job_id=job.pk, outcome=Result.Outcome.PENDING).update(
        outcome=Result.Outcome.FAILED, error_class=ERROR_CLASS, error=message, fetched_at=now
    )
    if unfinished:
        Job.objects.filter(pk=job.pk).update(failed=F("failed") + unfinished)
        job.failed += unfinished
    return (
        f"Job deadline passed: {limit} after the job started ({job.deadline_at:%Y-%m-%d %H:%M:%S} UTC);"
        f" {unfinished} unfinished URL{'s' if unfinished != 1 else ''} recorded as failed ({ERROR_CLASS})."
    )
