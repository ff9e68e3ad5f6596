"""Abuse limits on submitting jobs: queued jobs per user, submissions per minute per user.

Checked by `service.submit()`/`asubmit()` after validation and before
anything is stored, so a refused submission leaves no trace in the database.
The per-minute limit is a fixed-window counter in Redis (INCR + EXPIRE in one
MULTI), shared by every web process. If Redis cannot be reached the check
*fails open*: the submission goes through and a warning is logged, because
Redis carries only wake-ups and progress and the queue itself lives in the
database; refusing all work during a Redis outage would be worse than
briefly not counting. The queued-jobs limit is a database count; two
submissions racing through it at once can overshoot it by one each, which
the per-minute limit bounds.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Any

import redis.asyncio
import redis.exceptions
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

from jobs import conf
from jobs.exceptions import JobsError
from jobs.models import Job

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60
# Redis must answer within this, or the check fails open: a submission never waits long on it.
REDIS_TIMEOUT_SECONDS = 0.5
KEY_PREFIX = "batchfetch:ratelimit:submit"


class LimitExceeded(JobsError):
    """A 429: the user has to wait (`retry_after` seconds) or let queued jobs finish first.

    `errors` has the shape of SubmissionError's, so every interface reports it the same way.
    """

    def __init__(self, errors: dict[str, Any], *, retry_after: int) -> None:
        super().__init__(errors)
        self.errors = errors
        self.retry_after = retry_after


def queued_jobs(owner: AbstractBaseUser) -> int:
    return Job.objects.filter(owner=owner, status=Job.Status.QUEUED).count()


def check_queued(owner: AbstractBaseUser) -> None:
    """Raise LimitExceeded if the owner already has JOBS_MAX_QUEUED_PER_USER jobs waiting."""
    limit = int(conf.get("JOBS_MAX_QUEUED_PER_USER"))
    waiting = queued_jobs(owner)
    if waiting >= limit:
        raise LimitExceeded(
            {"jobs": f"you have {waiting} queued jobs (at most {limit}); wait for some to start or cancel them"},
            retry_after=WINDOW_SECONDS,
        )


async def count_submission(owner_pk: Any, *, now: float | None = None) -> tuple[int, int] | None:
    """Count one submission in the owner's current window: (count so far, seconds left), or None if Redis is down."""
    now = time.time() if now is None else now
    window = int(now // WINDOW_SECONDS)
    key = f"{KEY_PREFIX}:{_database_tag()}:{owner_pk}:{window}"
    client = redis.asyncio.from_url(
        settings.REDIS_URL, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
    )
    try:
        async with client.pipeline(transaction=True) as pipe:
            # Twice the window: the key outlives its window even if clocks of web processes differ a little.
            count, _ = await pipe.incr(key).expire(key, 2 * WINDOW_SECONDS).execute()
    except (redis.exceptions.RedisError, OSError) as exc:
        logger.warning("Submission rate limit not applied (failing open): Redis failed: %r", exc)
        return None
    finally:
        await client.aclose()
    return int(count), max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))


def _database_tag() -> str:
    """Tells installations sharing one Redis apart: user 5 of one database is not user 5 of another."""
    database = settings.DATABASES["default"]
    return hashlib.sha256(f"{database.get('HOST') or ''}:{database.get('NAME')}".encode()).hexdigest()[:12]


async def acheck_rate(owner: AbstractBaseUser) -> None:
    """Count this submission; raise LimitExceeded past JOBS_SUBMISSIONS_PER_MINUTE in the current minute."""
    limit = int(conf.get("JOBS_SUBMISSIONS_PER_MINUTE"))
    counted = await count_submission(owner.pk)
    if counted is not None and counted[0] > limit:
        raise LimitExceeded(
            {"jobs": f"too many submissions: at most {limit} a minute; try again in {counted[1]} s"},
            retry_after=counted[1],
        )


async def acheck_submission(owner: AbstractBaseUser) -> None:
    """All submission limits, for async callers (API, WebSocket)."""
    await database_sync_to_async(check_queued)(owner)
    await acheck_rate(owner)


def check_submission(owner: AbstractBaseUser) -> None:
    """All submission limits, for sync callers (form view, CLI)."""
    check_queued(owner)
    async_to_sync(acheck_rate)(owner)
