"""Recording under a share: fenced writes of fetch results, and leaving the job.

Every write is fenced (fences.py): it needs a live share holding the results'
chunks, else `ClaimLost` and nothing is written. A worker ends its part with
`leave_job`; the last share out moves the job on (completed, cancelled,
paused, or back to queued).

All functions in jobs/queue/ are sync and short; the worker calls the
`a`-prefixed variants, which run them in a thread (`database_sync_to_async`)
so the event loop never blocks on the database.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from channels.db import database_sync_to_async
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from jobs.exceptions import ClaimLost
from jobs.models import Chunk, Job, Result, Share
from jobs.ops import metrics
from jobs.queue import deadlines
from jobs.queue.control import _finish
from jobs.queue.fences import Claim, _fenced_chunks, _fenced_share, _locked_job, _mark_done
from jobs.queue.rawsql import db_value, execute, table
from jobs.queue.resultwrite import FinalRow, write_results

if TYPE_CHECKING:
    from jobs.engine.values import FetchResult

Ending = Literal["done", "cancel", "stop", "pause", "deadline"]
"""Why a worker leaves a job: no URL left for it, cancelled, shutting down, paused, its job deadline passed."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """What one `record_results` batch wrote."""

    job: Job
    """The job after the batch (counters included)."""
    results: list[FinalRow]
    """The rows that were still pending and are now final, in position order."""


def record_results(claim: Claim, results: Sequence[FetchResult], *, fetched_at: datetime | None = None) -> Recorded:
    """Write one batch of fetch results and the job's counters in one transaction.

    Only rows still pending are written (a result for a row that is already
    final is dropped), and the counters grow by exactly the rows written, so
    they always equal what the rows say. Raises ClaimLost (writing nothing) if
    the share was lost or no longer holds a result's chunk.
    """
    fetched_at = fetched_at or timezone.now()
    started = time.perf_counter()
    with transaction.atomic():
        job = _locked_job(claim.job_id)
        positions = [result.position for result in results]
        held = _fenced_chunks(claim, timezone.now(), min(positions, default=0), max(positions, default=0))
        starts = [start for start, _end in held]  # chunks never overlap: bisect instead of a scan per result
        for result in results:
            i = bisect_right(starts, result.position) - 1
            if i < 0 or result.position >= held[i][1]:
                raise ClaimLost(f"job {claim.job_id}: URL {result.position + 1} is no longer held by {claim.worker_id}")
        rows = write_results(job.pk, results, fetched_at)
        if rows:
            counts = Counter(row.outcome for row in rows)
            succeeded, failed = counts[Result.Outcome.SUCCEEDED], counts[Result.Outcome.FAILED]
            job.succeeded += succeeded
            job.failed += failed
            execute(
                f"UPDATE {table(Job)}"
                " SET succeeded = succeeded + %s, failed = failed + %s WHERE id = %s",
                [succeeded, failed, db_value(job.pk, Job, "id")],
            )
    # Counted here, once committed, by whoever wrote the rows: a flush cancelled after its shielded write
    # finished leaves the rows to nobody else (the next attempt finds them final and writes none).
    metrics.DB_WRITE_DURATION.observe(time.perf_counter() - started)
    metrics.observe_recorded(rows)
    return Recorded(job=job, results=rows)


def leave_job(claim: Claim, ending: Ending, *, error: str | None = None) -> Job:
    """End the share: hand its chunks back and, as the last share out, move the job on.

    With `error`, the job failed (whoever else works on it stops at their next
    check). Otherwise, once no other live share remains: a `cancelling` job
    becomes `cancelled` (its fetches have stopped), a `pausing` one `paused`,
    a job with URLs left `queued` again (to resume with them) and one with
    nothing pending `completed` — which it also becomes as soon as nothing is
    pending, whoever recorded the last row. Chunks handed back unfinished on
    `stop` or `pause` (a clean hand-back) do not count towards
    WORKER_MAX_CLAIMS. ClaimLost (changing nothing) if the share was lost.
    """
    with transaction.atomic():
        job = _locked_job(claim.job_id)
        now = timezone.now()
        share_id = _fenced_share(claim, now)
        _mark_done(share_id)
        mine = Chunk.objects.filter(share_id=share_id)
        if ending in ("stop", "pause"):
            mine.filter(done=False).update(claims=Greatest(F("claims") - 1, 0))
        mine.update(share=None)
        Share.objects.filter(pk=share_id).delete()
        if job.is_terminal:
            return job
        if error is not None:
            _finish(job, Job.Status.FAILED, now, error=error)
            return job
        if ending == "deadline":  # whoever sees it first fails the whole job, other shares or not
            _finish(job, Job.Status.FAILED, now, error=deadlines.fail_unfinished(job, now))
            return job
        last = not Share.objects.filter(job=job, lease_expires_at__gt=now).exists()
        pending = Result.objects.filter(job_id=job.pk, outcome=Result.Outcome.PENDING).exists()
        if job.status == Job.Status.CANCELLING:
            if last:
                _finish(job, Job.Status.CANCELLED, now)
        elif not pending:
            _finish(job, Job.Status.COMPLETED, now)
        elif last:
            job.status = Job.Status.PAUSED if job.status == Job.Status.PAUSING else Job.Status.QUEUED
            job.save(update_fields=["status"])
    return job


arecord_results = database_sync_to_async(record_results)
aleave_job = database_sync_to_async(leave_job)
