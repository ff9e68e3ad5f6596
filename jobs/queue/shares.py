"""A share's size and lease: its fair part of the job's concurrency, rebalanced, and the lease renewed.

A worker takes part in a job through a *share* (claims.claim_job): a claim
token, a lease renewed by `check_share`, and *slots*, the requests of the job
it may have in flight. The slots of a job's live shares add up to at most the
job's concurrency, so several workers can share one large job without
exceeding it: a newcomer takes its fair part of the free slots, the others
shrink to their fair part once their requests in flight fit it, and the
newcomer grows into what they freed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from jobs import conf
from jobs.models import Job, Share
from jobs.queue.fences import _LIVE_SHARE, Claim, _live_share_params, _locked_job, _share_lost
from jobs.queue.rawsql import execute, fetch, table


@dataclass(frozen=True, slots=True)
class ShareCheck:
    """What `check_share` found: the job's status and the slots the worker may use now."""

    status: str
    slots: int


def _lease(seconds: float | None) -> timedelta:
    return timedelta(seconds=conf.get("WORKER_LEASE_SECONDS") if seconds is None else seconds)


def _fair_slots(concurrency: int, shares: int, max_slots: int | None) -> int:
    """A share's fair part of the job's concurrency among `shares` live shares."""
    fair = math.ceil(concurrency / max(shares, 1))
    return fair if max_slots is None else min(fair, max_slots)


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
    found = fetch(
        f"SELECT s.id, s.slots, j.status, j.concurrency, (SELECT COUNT(*) FROM {table(Share)} AS o"
        f" WHERE o.job_id = s.job_id AND o.lease_expires_at > %s) FROM {table(Share)} AS s"
        f" INNER JOIN {table(Job)} AS j ON j.id = s.job_id WHERE {_LIVE_SHARE}",
        [connection.ops.adapt_datetimefield_value(now), *_live_share_params(claim, now)],
    )
    if not found:
        raise _share_lost(claim)
    share_id, slots, status, concurrency, live = found[0]
    fair = _fair_slots(concurrency, live, max_slots)
    if applied < slots and in_flight <= applied:
        _update_share(claim, now, "slots", applied)  # giving slots back is always safe: no lock needed
        slots = applied
    if slots < fair:
        slots = _grow(claim, share_id, slots, fair, concurrency, now)
    if renew:
        _update_share(claim, now, "lease_expires_at", connection.ops.adapt_datetimefield_value(now + _lease(None)))
    return ShareCheck(status=status, slots=min(slots, fair))


def _update_share(claim: Claim, now: datetime, column: str, value: Any) -> None:
    """Set one column of `claim`'s share (`value` as the column takes it) if the share is live; else ClaimLost."""
    column = connection.ops.quote_name(column)
    sql = f"UPDATE {table(Share)} SET {column} = %s WHERE token = %s AND lease_expires_at > %s"
    if not execute(sql, [value, *_live_share_params(claim, now)]):
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


acheck_share = database_sync_to_async(check_share)
