"""Joining a job and claiming its URLs: fair claim order, shares of jobs, chunks, poison.

The database is the queue. Channel-layer messages only wake workers up (they
are at-most-once and expire), so every state change lives in jobs/queue/.

A worker joins a job with `claim_job`, which gives it a share (shares.py).
Under its share it claims *chunks* (`claim_chunk`): ranges of the job's
positions (WORKER_CHUNK_SIZE URLs), handed over with their pending URLs. A
share whose lease expired is lost: the next worker to join the job deletes it,
and its chunks are claimed again, with only their still-pending URLs. A chunk
claimed WORKER_MAX_CLAIMS times without a clean hand-back fails the job
(poison).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from channels.db import database_sync_to_async
from django.db import connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from jobs import conf
from jobs.models import Chunk, Job, RequestLine, Result, Share
from jobs.queue import deadlines
from jobs.queue.control import _finish
from jobs.queue.fences import Claim, _fenced_share, _locked_job, _mark_done
from jobs.queue.rawsql import db_value, execute, fetch, table
from jobs.queue.shares import _fair_slots, _lease
from jobs.requestdata import LineRow

logger = logging.getLogger(__name__)

STARTED = (Job.Status.RUNNING, Job.Status.CANCELLING, Job.Status.PAUSING)


@dataclass(frozen=True, slots=True)
class ChunkClaim:
    """A chunk claimed under a share: positions [start, end) and those of them still pending."""

    start: int
    end: int
    items: list[tuple[int, str]]
    """Pending (position, url) pairs, in position order."""
    lines: list[LineRow] = field(default_factory=list)
    """The `RequestLine` overrides of those positions that have one (only for a job with `line_requests`)."""


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


def _candidates(exclude: Collection[uuid.UUID]) -> QuerySet[Job]:
    """Jobs `claim_job` could give a share of: queued or started ones, less `exclude` (a superset of `_joinable`).

    One indexed look-up (status) before the full query, whose subqueries cost ~4 ms of CPU: a busy worker asks
    every second while it runs its jobs (the poll), and then usually nothing else is queued or running.
    """
    return Job.objects.filter(status__in=[Job.Status.QUEUED, *STARTED]).exclude(pk__in=list(exclude))


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
    if not _candidates(passed).exists():
        return None
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
            deadlines.start_clock(job, now)
            job.save(update_fields=["status", "started_at", "deadline_at"])
        return Claim(job=job, token=share.token, worker_id=worker_id, slots=slots)


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
            items, lines = _pending(job, job_id, start, end)
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
            return ChunkClaim(start=start, end=end, items=items, lines=lines)


def _pending(job: Job, job_id: object, start: int, end: int) -> tuple[list[tuple[int, str]], list[LineRow]]:
    """The pending (position, url) pairs of [start, end), and the overrides of their lines if the job has any.

    The overrides come in the same query (a join on the unique (job, position)):
    one query per chunk, not two, on the worker's hot path."""
    where = "r.job_id = %s AND r.outcome = %s AND r.position >= %s AND r.position < %s ORDER BY r.position"
    params = [job_id, Result.Outcome.PENDING, start, end]
    if not job.line_requests:
        return fetch(f"SELECT r.position, r.url FROM {table(Result)} AS r WHERE {where}", params), []
    rows = fetch(
        "SELECT r.position, r.url, l.position, l.method, l.headers, l.sealed_headers, l.body"
        f" FROM {table(Result)} AS r LEFT JOIN {table(RequestLine)} AS l"
        f" ON l.job_id = r.job_id AND l.position = r.position WHERE {where}",
        params,
    )
    items = [(position, url) for position, url, *_ in rows]
    # Raw SQL gives JSON columns as text on both databases (Django loads them only through the ORM).
    lines = [
        (position, method, None if headers is None else json.loads(headers), sealed, body)
        for _, _, position, method, headers, sealed, body in rows
        if position is not None
    ]
    return items, lines


def _fail_poison(job: Job, chunk: Chunk, now: datetime) -> None:
    """Fail a job one of whose chunks every claim so far left unfinished (in the caller's transaction)."""
    logger.warning("Job %s failed: URLs %s claimed %d times without finishing", job.pk, chunk, chunk.claims)
    reason = (
        f"Gave up after {chunk.claims} claims of URLs {chunk.start + 1}-{chunk.end}: they never finished"
        " (their worker crashed or was killed each time)."
    )
    _finish(job, Job.Status.FAILED, now, error=reason)


aclaim_job = database_sync_to_async(claim_job)
aclaim_chunk = database_sync_to_async(claim_chunk)
