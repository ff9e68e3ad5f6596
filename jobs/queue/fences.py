"""The fences of work under a share: the job-row lock and the checks that a share is still live.

A chunk belongs to one share at a time. A share whose lease expired is lost
(its worker crashed or stalled), and with it every right to write: each write
(`claim_chunk`, `record_results`, `leave_job`) first checks here that its
share is live and holds the results' chunks, else `ClaimLost` and nothing is
written.

Lock order: the job row first (FOR UPDATE on PostgreSQL; SQLite's IMMEDIATE
transactions hold the database's write lock from BEGIN), so claims, takeovers
and fenced writes of one job are serialized.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models.sql import Query
from django.db.transaction import TransactionManagementError

from jobs.exceptions import ClaimLost
from jobs.models import Chunk, Job, Result, Share
from jobs.queue.rawsql import db_value, execute, fetch, table


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


def _locked_job(job_id: uuid.UUID) -> Job:
    """The job row, locked for the caller's transaction (see "Lock order" above)."""
    if not connection.in_atomic_block:  # as select_for_update() would: outside one, the lock ends at once
        raise TransactionManagementError("_locked_job() must run inside a transaction")
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    loader = _job_loader()
    rows = fetch(f"SELECT {loader.columns} FROM {table(Job)} WHERE id = %s{lock}", [db_value(job_id, Job, "id")])
    if not rows:
        raise Job.DoesNotExist(f"job {job_id} does not exist")
    return loader.load(rows[0])


@dataclass(frozen=True, slots=True)
class _JobLoader:
    """Job rows -> Job instances as `Job.objects.raw` makes them (the fields' database converters, then
    `Job.from_db`), with the column list and converters worked out once per connection: raw() did that on
    every call, ~60% of `_locked_job`, which every result batch, chunk claim and share leaving runs."""

    columns: str
    names: list[str]
    compiler: Any
    converters: dict[int, Any]
    alias: str

    def load(self, row: tuple[Any, ...]) -> Job:
        if self.converters:
            (row,) = self.compiler.apply_converters([row], self.converters)
        return Job.from_db(self.alias, self.names, row)


def _job_loader() -> _JobLoader:
    """The `_JobLoader` of the current connection (one per thread and alias, like the connection)."""
    loader: _JobLoader | None = getattr(connection, "_batchfetch_job_loader", None)
    if loader is None:
        fields = Job._meta.concrete_fields
        compiler = connection.ops.compiler("SQLCompiler")(Query(Job), connection, connection.alias)
        loader = _JobLoader(
            columns=", ".join(connection.ops.quote_name(field.column) for field in fields),
            names=[field.attname for field in fields],
            compiler=compiler,
            converters=compiler.get_converters([field.get_col(Job._meta.db_table) for field in fields]),
            alias=connection.alias,
        )
        connection._batchfetch_job_loader = loader  # type: ignore[attr-defined]
    return loader


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
