"""Helpers of the worker tests: jobs, reloads, outcomes and shares of a job, polling, a runworker process."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from channels.db import database_sync_to_async
from django.db.models import Count
from django.utils import timezone

from jobs.models import Chunk, Job, Result, Share
from jobs.queue import control
from tests import services


def make_job(owner: Any, urls: list[str], *, concurrency: int, timeout: float = 5, **options: Any) -> Job:
    return control.enqueue_job(
        owner=owner, urls=urls, name="test", concurrency=concurrency, timeout=timeout, options=options
    )


amake_job = database_sync_to_async(make_job)


@database_sync_to_async
def reload(job: Job) -> Job:
    job.refresh_from_db()
    return job


async def _status_is(job: Job, status: str) -> bool:
    return (await reload(job)).status == status


def outcomes(job: Job) -> dict[str, int]:
    return dict(Result.objects.filter(job=job).values_list("outcome").annotate(n=Count("id")))


def expire_shares(job: Job) -> None:
    """Let the job's shares' leases run out, as when their workers crashed or stalled."""
    Share.objects.filter(job=job).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def shares_of(job: Job) -> list[str]:
    """The workers holding a share of the job (none once every worker has left it)."""
    return sorted(Share.objects.filter(job=job).values_list("worker_id", flat=True))


def chunk_claims(job: Job) -> list[int]:
    return list(Chunk.objects.filter(job=job).order_by("start").values_list("claims", flat=True))


def assert_counters_match_rows(job: Job) -> None:
    job.refresh_from_db()
    rows = outcomes(job)
    assert sum(rows.values()) == job.total
    assert (job.succeeded, job.failed, job.cancelled) == (
        rows.get("succeeded", 0), rows.get("failed", 0), rows.get("cancelled", 0)
    )  # fmt: skip


async def eventually(predicate: Callable[[], Any], *, timeout: float, what: str) -> float:
    """Poll `predicate` (sync or async) until it is true; return the seconds it took."""
    started = time.monotonic()
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def start_worker(env: dict[str, str], log: Path, *args: str) -> services.ManagedProcess:
    argv = [sys.executable, "manage.py", "runworker", "--concurrency", "10", *args]
    return services.start_process("runworker", argv, env=env, cwd=services.BASE_DIR, log_path=log)


def final_rows(job: Job) -> int:
    return Result.objects.filter(job=job).exclude(outcome="pending").count()
