"""Plain-dict views of schedules, their runs and changes, for the API, the pages and the CSV export."""

from __future__ import annotations

from typing import Any

from jobs.models import Job
from jobs.monitoring_models import Change, Schedule, ScheduleRun

CHANGE_FIELDS = ("position", "url", "kind", "old_outcome", "new_outcome", "old_status", "new_status",
                 "old_sha256", "new_sha256")  # fmt: skip


def schedule_to_dict(schedule: Schedule) -> dict[str, Any]:
    return {
        "id": schedule.pk, "name": schedule.name, "urls": list(schedule.urls), **schedule.options,
        "cron": schedule.cron or None, "interval": schedule.interval, "timezone": schedule.timezone,
        "enabled": schedule.enabled, "notify_url": schedule.notify_url, "notify_on": list(schedule.notify_on),
        "notify_email": schedule.notify_email,
        "next_run_at": schedule.next_run_at.isoformat() if schedule.next_run_at else None,
        "created_at": schedule.created_at.isoformat(),
    }  # fmt: skip


def schedule_summary(schedule: Schedule) -> dict[str, Any]:
    """A schedule without its URL list (lists of schedules stay small)."""
    data = schedule_to_dict(schedule)
    data["url_count"] = len(data.pop("urls"))
    return data


def run_to_dict(run: ScheduleRun) -> dict[str, Any]:
    job: Job | None = run.job
    duration = job.duration if job is not None else None
    return {
        "id": run.pk, "due_at": run.due_at.isoformat(), "status": run.status, "manual": run.manual,
        "reason": run.reason, "job": str(job.pk) if job else None, "job_status": job.status if job else None,
        "total": job.total if job else None, "succeeded": job.succeeded if job else None,
        "failed": job.failed if job else None,
        "duration": round(duration.total_seconds(), 3) if duration is not None else None,
    }  # fmt: skip


def change_to_dict(change: Change) -> dict[str, Any]:
    return {field: getattr(change, field) for field in CHANGE_FIELDS}
