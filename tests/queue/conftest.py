"""Helpers of the queue tests: jobs, fetch results, expired shares, shares joined and chunks taken."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Count
from django.utils import timezone

from jobs.engine.values import FetchResult
from jobs.models import Job, Result, Share
from jobs.queue import claims, control, fences


def make_job(owner: Any, n: int = 5, *, concurrency: int = 2) -> Job:
    return control.enqueue_job(
        owner=owner, urls=[f"http://127.0.0.1:9/{i}" for i in range(n)], name="", concurrency=concurrency, timeout=1
    )


def fetched(position: int, outcome: str = "succeeded", status: int | None = 200) -> FetchResult:
    error = "" if outcome == "succeeded" else "http_status: 500 Internal Server Error"
    return FetchResult(
        position=position, url=f"http://127.0.0.1:9/{position}", outcome=outcome, status_code=status,
        bytes=12, elapsed_ms=3, attempts=1, error=error,
    )  # fmt: skip


def expire_shares(job: Job) -> None:
    """What a crashed worker leaves behind: its share's lease runs out."""
    Share.objects.filter(job=job).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def take_chunks(claim: fences.Claim) -> list[int]:
    """Claim every chunk left for `claim`; return the pending positions handed over."""
    positions: list[int] = []
    while (chunk := claims.claim_chunk(claim)) is not None:
        positions += [position for position, _ in chunk.items]
    return positions


def joined(worker_id: str, **kwargs: Any) -> fences.Claim:
    claim = claims.claim_job(worker_id, **kwargs)
    assert claim is not None
    return claim


def assert_counters_match_rows(job: Job) -> None:
    job.refresh_from_db()
    rows = dict(Result.objects.filter(job=job).values_list("outcome").annotate(n=Count("id")))
    assert job.total == sum(rows.values())
    assert (job.succeeded, job.failed, job.cancelled) == (
        rows.get("succeeded", 0), rows.get("failed", 0), rows.get("cancelled", 0)
    )  # fmt: skip
