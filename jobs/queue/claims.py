"""The durable job queue: enqueue, claim shares and chunks under leases, record, leave.

The database is the queue. Channel-layer messages only wake workers up (they
are at-most-once and expire), so every state change lives here.

A worker takes part in a job through a *share* (`claim_job`): a claim token, a
lease renewed by `check_share`, and *slots*, the requests of the job it may
have in flight. The slots of a job's live shares add up to at most the job's
concurrency, so several workers can share one large job without exceeding it:
a newcomer takes its fair part of the free slots, the others shrink to their
fair part once their requests in flight fit it, and the newcomer grows into
what they freed.

Under its share a worker claims *chunks* (`claim_chunk`): ranges of the job's
positions (WORKER_CHUNK_SIZE URLs), handed over with their pending URLs. A
chunk belongs to one share at a time. A share whose lease expired is lost (its
worker crashed or stalled): the next worker to join the job deletes it, and its
chunks are claimed again, with only their still-pending URLs. Every write
(`record_results`, `leave_job`) is fenced: it needs a live share holding the
results' chunks, else `ClaimLost` and nothing is written. A chunk claimed
WORKER_MAX_CLAIMS times without a clean hand-back fails the job (poison).

A worker ends its part with `leave_job`; the last share out moves the job on
(completed, cancelled, paused, or back to queued).

Lock order: the job row first (FOR UPDATE on PostgreSQL; SQLite's IMMEDIATE
transactions hold the database's write lock from BEGIN), so claims, takeovers
and fenced writes of one job are serialized.

All functions here are sync and short; the worker calls the `a`-prefixed
variants, which run them in a thread (`database_sync_to_async`) so the event
loop never blocks on the database.
"""

from __future__ import annotations

import logging
import math
import uuid
from bisect import bisect_right
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from channels.db import database_sync_to_async
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce, Greatest
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from jobs import conf
from jobs.exceptions import ClaimLost
from jobs.models import Chunk, Job, Result, Share
from jobs.queue.bulkinsert import insert_pending_results
from jobs.queue.rawsql import db_value, execute, fetch, table
from jobs.queue.resultwrite import FinalRow, write_results

if TYPE_CHECKING:
    from jobs.engine.values import FetchResult

logger = logging.getLogger(__name__)

Ending = Literal["done", "cancel", "stop", "pause"]
"""Why a worker leaves a job: no URL left for it, cancelled, shutting down, paused."""
STARTED = (Job.Status.RUNNING, Job.Status.CANCELLING, Job.Status.PAUSING)


@dataclass(frozen=True, slots=True)
class Claim:
    """A worker's share of one job; every write under it is fenced by `token`."""

    job: Job
    """The job as it was claimed (status, concurrency, options, owner_id)."""
    token: uuid.UUID
    """The share's claim token."""
    worker_id: str
    """Who holds the share (host:pid:random)."""
    slots: int
    """Requests of the job the worker may have in flight, as granted at the claim (`check_share` adjusts it)."""

    @property
    def job_id(self) -> uuid.UUID:
        return self.job.pk


@dataclass(frozen=True, slots=True)
class ChunkClaim:
    """A chunk claimed under a share: positions [start, end) and those of them still pending."""

    start: int
    end: int
    items: list[tuple[int, str]]
    """Pending (position, url) pairs, in position order."""


@dataclass(frozen=True, slots=True)
class ShareCheck:
    """What `check_share` found: the job's status and the slots the worker may use now."""

    status: str
    slots: int


@dataclass(frozen=True, slots=True)
class Recorded:
    """What one `record_results` batch wrote."""

    job: Job
    """The job after the batch (counters included)."""
    results: list[FinalRow]
    """The rows that were still pending and are now final, in position order."""


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


# --- Joining a job --------------------------------------------------------------------


def _lease(seconds: float | None) -> timedelta:
    return timedelta(seconds=conf.get("WORKER_LEASE_SECONDS") if seconds is None else seconds)


def _live_shares(now: datetime) -> QuerySet[Share]:
    """Shares whose lease has not expired (the outer job is OuterRef('pk'))."""
    return Share.objects.filter(job=OuterRef("pk"), lease_expires_at__gt=now)


def fair_order(jobs: QuerySet[Job], now: datetime) -> QuerySet[Job]:
    """Claim order: the owner with the fewest running jobs first, then jobs with fewer workers, then the oldest.

    Plain oldest-first would let one user's thousand queued jobs occupy every
    worker while another user's single job waits behind them all. A job counts
    as running while a share of it is live (a crashed worker's job does not
    count); jobs nobody works on come before joining a running one.
    """
    running = (
        Job.objects.filter(owner=OuterRef("owner"), status__in=[Job.Status.RUNNING, Job.Status.CANCELLING])
        .filter(Exists(Share.objects.filter(job=OuterRef("pk"), lease_expires_at__gt=now)))
        .order_by()
        .values("owner")
        .annotate(count=Count("pk"))
        .values("count")
    )
    live = _live_shares(now).order_by().values("job").annotate(count=Count("pk")).values("count")
    return jobs.annotate(
        owner_running=Coalesce(Subquery(running), 0), live_shares=Coalesce(Subquery(live), 0)
    ).order_by("owner_running", "live_shares", "created_at")


def _joinable(jobs: QuerySet[Job], worker_id: str, now: datetime) -> QuerySet[Job]:
    """Jobs `worker_id` can take part in: see `claim_job`."""
    free_chunk = Chunk.objects.filter(job=OuterRef("pk"), done=False).filter(
        Q(share__isnull=True) | Q(share__lease_expires_at__lte=now)
    )
    orphaned = Q(status__in=STARTED) & ~Exists(_live_shares(now))
    helpable = (
        Q(status=Job.Status.RUNNING, live_shares__lt=F("concurrency"))
        & Exists(free_chunk)
        & ~Exists(_live_shares(now).filter(worker_id=worker_id))
    )
    return fair_order(jobs, now).filter(Q(status=Job.Status.QUEUED) | orphaned | helpable)


def _fair_slots(concurrency: int, shares: int, max_slots: int | None) -> int:
    """A share's fair part of the job's concurrency among `shares` live shares."""
    fair = math.ceil(concurrency / max(shares, 1))
    return fair if max_slots is None else min(fair, max_slots)


def claim_job(
    worker_id: str, lease_seconds: float | None = None, *, max_slots: int | None = None,
    exclude: Collection[uuid.UUID] = (),
) -> Claim | None:
    """Give `worker_id` a share of the first job in fair order it can work on, or return None.

    Claimable: queued jobs (they become `running`); started jobs that no live
    share holds (their workers died: a `cancelling` or `pausing` one keeps its
    status, for the new worker to finish the cancel or pause); and running jobs
    with a chunk nobody holds and fewer live shares than their concurrency, in
    which `worker_id` has no share yet (so several workers share one job). The
    share's slots are its fair part of the job's concurrency, at most
    `max_slots` (the worker's own limit) and at most what other shares left
    free. Lapsed shares of the job are deleted, freeing their chunks. Atomic on
    every backend: a locked job row is skipped on PostgreSQL (SKIP LOCKED),
    SQLite serializes writers. `exclude`: jobs the worker already runs.
    """
    lease = _lease(lease_seconds)
    passed = set(exclude)
    while True:
        with transaction.atomic():
            now = timezone.now()
            jobs = Job.objects.exclude(pk__in=list(passed))
            if connection.features.has_select_for_update_skip_locked:
                jobs = jobs.select_for_update(skip_locked=True, of=("self",))
            job = _joinable(jobs, worker_id, now).first()
            if job is None:
                return None
            # PostgreSQL re-checks a row that was locked while the query ran against its new version, but
            # evaluates the subqueries (live shares, free chunks) on the query's older snapshot: look again.
            if not _joinable(Job.objects.filter(pk=job.pk), worker_id, now).exists():
                passed.add(job.pk)
                continue
            Share.objects.filter(job=job, lease_expires_at__lte=now).delete()  # their chunks become free (SET NULL)
            live = Share.objects.filter(job=job).aggregate(count=Count("pk"), used=Sum("slots"))
            free = job.concurrency - (live["used"] or 0)
            slots = max(0, min(_fair_slots(job.concurrency, live["count"] + 1, max_slots), free))
            share = Share.objects.create(job=job, worker_id=worker_id, lease_expires_at=now + lease, slots=slots)
            if job.status == Job.Status.QUEUED:
                job.status = Job.Status.RUNNING
            job.started_at = job.started_at or now
            job.save(update_fields=["status", "started_at"])
        return Claim(job=job, token=share.token, worker_id=worker_id, slots=slots)


# --- Working under a share -------------------------------------------------------------


def _locked_job(job_id: uuid.UUID) -> Job:
    """The job row, locked for the caller's transaction (see "Lock order" above)."""
    if not connection.in_atomic_block:  # as select_for_update() would: outside one, the lock ends at once
        raise TransactionManagementError("_locked_job() must run inside a transaction")
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    for job in Job.objects.raw(f"SELECT * FROM {table(Job)} WHERE id = %s{lock}", [db_value(job_id, Job, "id")]):
        return job
    raise Job.DoesNotExist(f"job {job_id} does not exist")


def _share_lost(claim: Claim) -> ClaimLost:
    return ClaimLost(f"job {claim.job_id}: the share of {claim.worker_id} is lost (its lease expired)")


_LIVE_SHARE = "s.token = %s AND s.lease_expires_at > %s"


def _live_share_params(claim: Claim, now: datetime) -> list[Any]:
    """The parameters of _LIVE_SHARE (`claim`'s share, as `s`, while its lease runs)."""
    return [db_value(claim.token, Share, "token"), connection.ops.adapt_datetimefield_value(now)]


def _fenced_share(claim: Claim, now: datetime) -> int:
    """The id of `claim`'s share if it is still live; ClaimLost otherwise."""
    rows = fetch(f"SELECT s.id FROM {table(Share)} AS s WHERE {_LIVE_SHARE}", _live_share_params(claim, now))
    if not rows:
        raise _share_lost(claim)
    return rows[0][0]


def _fenced_chunks(claim: Claim, now: datetime, first: int, last: int) -> list[tuple[int, int]]:
    """The (start, end) of the chunks of `claim`'s share that overlap positions `first`-`last`, in order, if the
    share is still live; ClaimLost otherwise. (A share keeps its finished chunks until it leaves the job.)"""
    qn = connection.ops.quote_name
    rows = fetch(
        f"SELECT s.id, c.start, c.{qn('end')} FROM {table(Share)} AS s"
        f" LEFT JOIN {table(Chunk)} AS c ON c.share_id = s.id AND c.start <= %s AND c.{qn('end')} > %s"
        f" WHERE {_LIVE_SHARE} ORDER BY c.start",
        [last, first, *_live_share_params(claim, now)],
    )
    if not rows:
        raise _share_lost(claim)
    return [(start, end) for _id, start, end in rows if start is not None]


def _mark_done(share_id: int) -> None:
    """Mark the share's chunks with no pending row left as done."""
    qn = connection.ops.quote_name
    chunk = table(Chunk)
    execute(
        f"UPDATE {chunk} SET done = %s WHERE share_id = %s AND NOT done AND NOT EXISTS ("
        f"SELECT 1 FROM {table(Result)} AS r WHERE r.job_id = {chunk}.job_id AND r.outcome = %s"
        f" AND r.position >= {chunk}.start AND r.position < {chunk}.{qn('end')})",
        [True, share_id, Result.Outcome.PENDING],
    )


def claim_chunk(claim: Claim) -> ChunkClaim | None:
    """Claim the next chunk of the job with pending URLs for `claim`'s share; None when none is free.

    The share's chunks whose URLs are all recorded are marked done on the way;
    so is a free chunk found to have nothing pending. A chunk already claimed
    WORKER_MAX_CLAIMS times fails the job as poison (and None is returned).
    ClaimLost if the share was lost.
    """
    max_claims = int(conf.get("WORKER_MAX_CLAIMS"))
    qn = connection.ops.quote_name
    chunks, shares, results = table(Chunk), table(Share), table(Result)
    with transaction.atomic():
        job = _locked_job(claim.job_id)
        now = timezone.now()
        share_id = _fenced_share(claim, now)
        _mark_done(share_id)
        if job.is_terminal:
            return None
        job_id = db_value(job.pk, Chunk, "job")
        while True:  # each turn claims a chunk, or marks one done (and it is no longer free)
            free = fetch(
                f"SELECT c.id, c.start, c.{qn('end')}, c.claims FROM {chunks} AS c"
                f" LEFT JOIN {shares} AS s ON s.id = c.share_id"
                " WHERE c.job_id = %s AND NOT c.done AND (c.share_id IS NULL OR s.lease_expires_at <= %s)"
                " ORDER BY c.start LIMIT 1",
                [job_id, connection.ops.adapt_datetimefield_value(now)],
            )
            if not free:
                return None
            chunk_id, start, end, claims = free[0]
            items = fetch(
                f"SELECT position, url FROM {results}"
                " WHERE job_id = %s AND outcome = %s AND position >= %s AND position < %s ORDER BY position",
                [job_id, Result.Outcome.PENDING, start, end],
            )
            if not items:
                execute(f"UPDATE {chunks} SET done = %s WHERE id = %s", [True, chunk_id])
                continue
            if claims >= max_claims:
                _fail_poison(job, Chunk(pk=chunk_id, job=job, start=start, end=end, claims=claims), now)
                return None
            execute(
                f"UPDATE {chunks} SET share_id = %s, worker_id = %s, claims = claims + 1 WHERE id = %s",
                [share_id, claim.worker_id, chunk_id],
            )
            return ChunkClaim(start=start, end=end, items=items)


def _fail_poison(job: Job, chunk: Chunk, now: datetime) -> None:
    """Fail a job one of whose chunks every claim so far left unfinished (in the caller's transaction)."""
    logger.warning("Job %s failed: URLs %s claimed %d times without finishing", job.pk, chunk, chunk.claims)
    reason = (
        f"Gave up after {chunk.claims} claims of URLs {chunk.start + 1}-{chunk.end}: they never finished"
        " (their worker crashed or was killed each time)."
    )
    _finish(job, Job.Status.FAILED, now, error=reason)


def check_share(
    claim: Claim, *, in_flight: int, applied: int, max_slots: int | None = None, renew: bool = False
) -> ShareCheck:
    """The job's status and the slots the share may use from now on; renew the lease if `renew`.

    Rebalancing: the fair part is the job's concurrency divided among its live
    shares. A share above it is told to use only its fair part; it gives the
    rest back in the database at a later check, once the worker has `applied`
    the smaller size and its requests `in_flight` fit it. A share below it
    grows into the slots other shares left free. So the recorded slots always
    cover the requests in flight and add up to at most the job's concurrency.
    ClaimLost if the share was lost.
    """
    now = timezone.now()
    share = (
        Share.objects.filter(token=claim.token, lease_expires_at__gt=now)
        .values("pk", "slots", "job__status", "job__concurrency")
        .first()
    )
    if share is None:
        raise _share_lost(claim)
    concurrency, slots = share["job__concurrency"], share["slots"]
    fair = _fair_slots(concurrency, Share.objects.filter(job_id=claim.job_id, lease_expires_at__gt=now).count(),
                       max_slots)
    if applied < slots and in_flight <= applied:
        _update_share(claim, now, slots=applied)  # giving slots back is always safe: no lock needed
        slots = applied
    if slots < fair:
        slots = _grow(claim, share["pk"], slots, fair, concurrency, now)
    if renew:
        _update_share(claim, now, lease_expires_at=now + _lease(None))
    return ShareCheck(status=share["job__status"], slots=min(slots, fair))


def _update_share(claim: Claim, now: datetime, **fields: Any) -> None:
    if not Share.objects.filter(token=claim.token, lease_expires_at__gt=now).update(**fields):
        raise _share_lost(claim)


def _grow(claim: Claim, share_id: int, slots: int, fair: int, concurrency: int, now: datetime) -> int:
    """Take free slots up to `fair`, under the job's lock so two shares never take the same ones."""
    with transaction.atomic():
        _locked_job(claim.job_id)
        used = Share.objects.filter(job_id=claim.job_id, lease_expires_at__gt=now).aggregate(used=Sum("slots"))["used"]
        grown = min(fair, slots + concurrency - (used or 0))
        if grown > slots:
            Share.objects.filter(pk=share_id).update(slots=grown)
            return grown
    return slots


def record_results(claim: Claim, results: Sequence[FetchResult], *, fetched_at: datetime | None = None) -> Recorded:
    """Write one batch of fetch results and the job's counters in one transaction.

    Only rows still pending are written (a result for a row that is already
    final is dropped), and the counters grow by exactly the rows written, so
    they always equal what the rows say. Raises ClaimLost (writing nothing) if
    the share was lost or no longer holds a result's chunk.
    """
    fetched_at = fetched_at or timezone.now()
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


def _finish(job: Job, status: str, now: datetime, *, error: str = "") -> None:
    """Move `job` to a terminal status (in the caller's transaction), cancelling its pending rows."""
    if status != Job.Status.COMPLETED:
        _cancel_pending(job)
    job.status = status
    job.error = error
    job.finished_at = now
    job.save(update_fields=["status", "error", "finished_at", "cancelled"])


aclaim_job = database_sync_to_async(claim_job)
aclaim_chunk = database_sync_to_async(claim_chunk)
acheck_share = database_sync_to_async(check_share)
arecord_results = database_sync_to_async(record_results)
aleave_job = database_sync_to_async(leave_job)
arequest_pause = database_sync_to_async(request_pause)
arequest_resume = database_sync_to_async(request_resume)
