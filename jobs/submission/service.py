"""Submit, cancel, pause, resume and re-run jobs: store the change, then announce it.

`submit()`/`cancel()` store the change, then announce it on the channel layer
(a wake-up for the workers, an update for the pages). The announcement is only
a speed-up: the database is the source of truth, and `progress` never raises.
"""

from __future__ import annotations

import uuid

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from jobs.models import Job, RequestLine, Result
from jobs.progress import groups
from jobs.queue import control, requestlines
from jobs.requestdata import REQUEST_FIELDS, LineRecord
from jobs.submission import limits
from jobs.submission.validation import NAME_MAX_LENGTH, OPTION_FIELDS, JobRequest


def submit(owner: AbstractBaseUser, request: JobRequest, *, check_limits: bool = True) -> Job:
    """Store the job (all rows or none), wake the workers, update the owner's pages.

    For sync callers (form views, CLI); async code uses `asubmit()`. Raises
    limits.LimitExceeded, storing nothing, when the owner is over a limit
    (`check_limits=False`: an operator's deliberate action in the admin).
    """
    if check_limits:
        limits.check_submission(owner)
    job = _enqueue(owner, request)
    async_to_sync(_announce_new)(job)
    return job


async def asubmit(owner: AbstractBaseUser, request: JobRequest) -> Job:
    """Async `submit()`: the database work runs in a thread, off the event loop."""
    await limits.acheck_submission(owner)
    job = await database_sync_to_async(_enqueue)(owner, request)
    await _announce_new(job)
    return job


def cancel(job_id: uuid.UUID | str) -> Job:
    """Request cancellation (see `control.request_cancel`) and announce the new state.

    The caller has checked that the user owns the job. Raises Job.DoesNotExist.
    """
    job = control.request_cancel(job_id)
    async_to_sync(_announce_change)(job)
    return job


async def acancel(job_id: uuid.UUID | str) -> Job:
    """Async `cancel()`."""
    job = await database_sync_to_async(control.request_cancel)(job_id)
    await _announce_change(job)
    return job


def pause(job_id: uuid.UUID | str) -> Job:
    """Request a pause (see `control.request_pause`) and announce the new state. Raises Job.DoesNotExist."""
    job = control.request_pause(job_id)
    async_to_sync(_announce_change)(job)
    return job


async def apause(job_id: uuid.UUID | str) -> Job:
    """Async `pause()`."""
    job = await control.arequest_pause(job_id)
    await _announce_change(job)
    return job


def resume(job_id: uuid.UUID | str) -> Job:
    """Resume a paused job (see `control.request_resume`), wake the workers, announce it."""
    job = control.request_resume(job_id)
    async_to_sync(_announce_new if job.status == Job.Status.QUEUED else _announce_change)(job)
    return job


async def aresume(job_id: uuid.UUID | str) -> Job:
    """Async `resume()`."""
    job = await control.arequest_resume(job_id)
    await (_announce_new if job.status == Job.Status.QUEUED else _announce_change)(job)
    return job


RERUN_SUFFIX = " (re-run)"
RERUN_FAILED_SUFFIX = " (re-run failed)"


def rerun(job: Job, *, failed_only: bool, check_limits: bool = True) -> Job | None:
    """A new job for the same owner and options over `job`'s URLs (only the failed ones if `failed_only`).

    The URLs keep their original order, and send the same requests (the job's
    request and the lines' overrides, secrets copied sealed). They passed
    validation when first submitted, so they are queued as they are. Returns None when there is
    nothing to re-run (no failed URL). Shared by the admin actions
    (`check_limits=False`: an operator's deliberate action) and the API.
    """
    rows = job.results.all()
    if failed_only:
        rows = rows.filter(outcome=Result.Outcome.FAILED)
    picked = list(rows.order_by("position").values_list("position", "url"))
    if not picked:
        return None
    urls = tuple(url for _, url in picked)
    suffix = RERUN_FAILED_SUFFIX if failed_only else RERUN_SUFFIX
    base = job.name or f"job {str(job.pk)[:8]}"
    name = base[: NAME_MAX_LENGTH - len(suffix)] + suffix
    options = {option: getattr(job, option) for option in OPTION_FIELDS}
    request = JobRequest(
        urls=urls, name=name, concurrency=job.concurrency, timeout=job.timeout, options=options,
        request={field: getattr(job, field) for field in REQUEST_FIELDS}, lines=_rerun_lines(job, picked),
    )  # fmt: skip
    return submit(job.owner, request, check_limits=check_limits)


def _rerun_lines(job: Job, picked: list[tuple[int, str]]) -> tuple[LineRecord, ...]:
    """The line overrides of the re-run rows, at their new positions."""
    if not job.line_requests:
        return ()
    new_position = {old: new for new, (old, _) in enumerate(picked)}
    return tuple(
        LineRecord(position=new_position[row.position], method=row.method, headers=row.headers,
                   sealed_headers=row.sealed_headers, body=row.body)
        for row in RequestLine.objects.filter(job=job).iterator(chunk_size=2000)
        if row.position in new_position
    )  # fmt: skip


def _enqueue(owner: AbstractBaseUser, request: JobRequest) -> Job:
    options = {**request.options, **request.request, "duplicate_urls": request.duplicates,
               "skipped": list(request.skipped), "skipped_urls": request.skipped_urls}
    with transaction.atomic():
        job = control.enqueue_job(
            owner=owner, urls=request.urls, name=request.name, concurrency=request.concurrency,
            timeout=request.timeout, options={**options, "line_requests": bool(request.lines)},
        )  # fmt: skip
        requestlines.insert_lines(job, request.lines)
    return job


async def _announce_new(job: Job) -> None:
    await groups.wake_workers()
    await groups.publish_job_update(job)


async def _announce_change(job: Job) -> None:
    await groups.publish_job_update(job)
