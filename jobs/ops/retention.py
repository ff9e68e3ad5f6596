"""Retention: deleting finished jobs with their results and saved bodies, a bounded piece at a time.

`purge` (behind `manage.py purge_jobs` and the worker's daily run when
JOBS_RETENTION_DAYS is set) finds finished jobs older than a cutoff and hands
them to `delete_jobs`, which the admin and the API use too. A job is deleted
in steps, each its own short transaction: its saved bodies, its result rows
ROWS_PER_DELETE positions at a time (one index range of `(job, position)`, so
no statement locks or holds more than that many rows, however large the job),
then the job row with its chunks and shares. Jobs are read BATCH_JOBS at a
time by primary key, so memory stays flat over any number of jobs.

Only jobs in a terminal status (completed, failed, cancelled) are ever
deleted: those statuses are final, and every step re-checks the status, so a
job that is queued, running, cancelling, pausing or paused survives. An
interrupted purge leaves a finished job with fewer rows than its counters; the
next run finishes it.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from jobs import bodies, conf
from jobs.models import Job, Result
from jobs.ops import metrics

logger = logging.getLogger(__name__)

ROWS_PER_DELETE = 5000
"""Result rows one DELETE removes at most."""
BATCH_JOBS = 100
"""Jobs read per query."""
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_age(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `0d`, `2w` -> a timedelta (ValueError otherwise)."""
    match = _AGE.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"not an age like 30d, 12h or 90m: {text!r}")
    return timedelta(seconds=float(match[1]) * UNITS[match[2]])


def parse_statuses(text: str) -> frozenset[str]:
    """`completed,failed` -> those statuses; only terminal ones may be purged (ValueError otherwise)."""
    statuses = frozenset(part.strip().lower() for part in text.split(",") if part.strip())
    wrong = sorted(statuses - set(Job.TERMINAL))
    if wrong or not statuses:
        allowed = ", ".join(sorted(Job.TERMINAL))
        raise ValueError(f"only finished jobs can be purged: statuses must be among {allowed}, not {text!r}")
    return statuses


@dataclass(slots=True)
class Removed:
    """What a purge or a deletion removed (or, in a dry run, would remove)."""

    jobs: int = 0
    results: int = 0
    bodies: int = 0

    def add(self, other: Removed) -> None:
        self.jobs += other.jobs
        self.results += other.results
        self.bodies += other.bodies

    def __str__(self) -> str:
        return f"{self.jobs} jobs, {self.results} results, {self.bodies} saved bodies"


def expired(*, older_than: timedelta, statuses: Collection[str] = Job.TERMINAL, now: datetime | None = None
            ) -> QuerySet[Job]:  # fmt: skip
    """Finished jobs (in `statuses`, terminal only) that finished more than `older_than` ago.

    A job that ended without starting (cancelled while queued) counts from its creation if it has no finish time.
    """
    cutoff = (now or timezone.now()) - older_than
    terminal = set(statuses) & set(Job.TERMINAL)
    return Job.objects.filter(status__in=terminal).filter(
        Q(finished_at__lte=cutoff) | Q(finished_at__isnull=True, created_at__lte=cutoff)
    )


def purge(
    *,
    older_than: timedelta,
    statuses: Collection[str] = Job.TERMINAL,
    dry_run: bool = False,
    progress: Callable[[Removed], None] | None = None,
) -> Removed:
    """Delete (or with `dry_run` only count) the jobs `expired()` finds, with their rows and bodies.

    `progress` is called with the running total after each batch of jobs.
    """
    jobs = expired(older_than=older_than, statuses=statuses)
    total = Removed()
    for batch in _batches(jobs):
        total.add(count_jobs(batch) if dry_run else delete_jobs(batch, statuses=statuses))
        if progress is not None:
            progress(total)
    return total


def _batches(jobs: QuerySet[Job]) -> Iterator[list[uuid.UUID]]:
    """The ids of `jobs`, BATCH_JOBS at a time, by primary key (stable whether or not they get deleted)."""
    after: uuid.UUID | None = None
    while True:
        page = jobs.order_by("pk")
        if after is not None:
            page = page.filter(pk__gt=after)
        ids = list(page.values_list("pk", flat=True)[:BATCH_JOBS])
        if not ids:
            return
        yield ids
        after = ids[-1]


def count_jobs(job_ids: Iterable[uuid.UUID]) -> Removed:
    """What `delete_jobs` would remove of these jobs (finished ones only)."""
    removed = Removed()
    for job_id, save_bodies in Job.objects.filter(pk__in=list(job_ids), status__in=Job.TERMINAL).values_list(
        "pk", "save_bodies"
    ):
        removed.jobs += 1
        removed.results += Result.objects.filter(job_id=job_id).count()
        removed.bodies += bodies.count_stored_bodies(job_id) if save_bodies else 0
    return removed


def delete_jobs(job_ids: Iterable[uuid.UUID], *, statuses: Collection[str] = Job.TERMINAL) -> Removed:
    """Delete these jobs if they are finished (in `statuses`), with their results and saved bodies.

    Jobs not finished are left alone (the caller may have listed them a moment ago).
    """
    terminal = set(statuses) & set(Job.TERMINAL)
    removed = Removed()
    for job_id, total, save_bodies in Job.objects.filter(pk__in=list(job_ids), status__in=terminal).values_list(
        "pk", "total", "save_bodies"
    ):
        removed.add(_delete_job(job_id, total=total, save_bodies=save_bodies, statuses=terminal))
    return removed


def _delete_job(job_id: uuid.UUID, *, total: int, save_bodies: bool, statuses: Collection[str]) -> Removed:
    still = Job.objects.filter(pk=job_id, status__in=statuses)
    removed = Removed()
    if save_bodies:
        removed.bodies = bodies.delete_stored_bodies(job_id)
    # The rows' positions are 0 .. total-1: one index range per statement, in its own transaction.
    for start in range(0, total, ROWS_PER_DELETE):
        if not still.exists():
            return removed  # not ours to delete after all (another purge got there first)
        count, _ = Result.objects.filter(job_id=job_id, position__gte=start, position__lt=start + ROWS_PER_DELETE
                                         ).delete()  # fmt: skip
        removed.results += count
    # Chunks, shares (and any row outside 0..total-1) go with the job, in one transaction.
    _, by_model = still.delete()
    removed.jobs = by_model.get(Job._meta.label, 0)
    removed.results += by_model.get(Result._meta.label, 0)
    return removed


def retention_days() -> float | None:
    """JOBS_RETENTION_DAYS as a number of days, or None to keep every job."""
    value = conf.get("JOBS_RETENTION_DAYS")
    return None if value in (None, "") else float(value)


def purge_expired() -> Removed | None:
    """The worker's daily run: purge per JOBS_RETENTION_DAYS (None if it is not set), and log what it removed."""
    days = retention_days()
    if days is None:
        return None
    removed = purge(older_than=timedelta(days=days))
    for kind in ("jobs", "results", "bodies"):
        metrics.PURGED.labels(kind).inc(getattr(removed, kind))
    logger.info("Retention (%g days): removed %s", days, removed)
    return removed
