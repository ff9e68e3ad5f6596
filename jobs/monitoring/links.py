"""Linking a new job to monitoring: a re-run's previous run, a job's own notification settings.

Called by the re-run paths (API, admin: `rerun()`) and by the job API (notify_*
fields) right after the job is stored. If the job ends before its link is
written, nothing is lost: a worker settles any monitored job that ended.
"""

from __future__ import annotations

from typing import Any

from jobs.models import Job
from jobs.monitoring_models import JobMonitor
from jobs.submission import service


def link_rerun(job: Job, *, previous: Job) -> JobMonitor:
    """`job` re-runs `previous`'s list: compare with it, and notify as it did (and for its schedule, if any)."""
    earlier = JobMonitor.objects.filter(job=previous).first()
    fields: dict[str, Any] = {"previous": previous}
    if earlier is not None:
        fields.update(
            notify_url=earlier.notify_url, notify_on=earlier.notify_on, notify_email=earlier.notify_email
        )
    monitor, _ = JobMonitor.objects.update_or_create(job=job, defaults=fields)
    return monitor


def link_notify(job: Job, *, notify: dict[str, Any]) -> JobMonitor:
    """`job` notifies as `notify` says (notify_url, notify_on, notify_email)."""
    monitor, _ = JobMonitor.objects.update_or_create(job=job, defaults=notify)
    return monitor


def rerun(job: Job, *, failed_only: bool, check_limits: bool = True) -> Job | None:
    """`submission.service.rerun`, linked to `job` as its previous run (what every re-run path calls)."""
    new = service.rerun(job, failed_only=failed_only, check_limits=check_limits)
    if new is not None:
        link_rerun(new, previous=job)
    return new
