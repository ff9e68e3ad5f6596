"""The channel layer's groups and messages: group names, message builders, and sending that never raises.

Group names may only hold ASCII letters, digits, '-', '_' and '.', under 100
characters. Messages are at-most-once: pages re-sync from a snapshot, and
workers poll the database, so a message is only ever a speed-up.

Nothing here raises to its caller when the channel layer (Redis) is down: the
outage is logged once when it starts and once when it ends, sends are skipped
for a moment after each failure so callers never pile up on a dead server, and
publishing resumes on its own when Redis is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from redis.exceptions import RedisError

from jobs.models import Job
from jobs.ops import metrics
from jobs.serializers import job_to_dict

logger = logging.getLogger(__name__)

WAKEUP_GROUP = "jobs.wakeup"
JOB_PROGRESS = "job.progress"  # to job_group(): {"type", "job": {...}, "results": [...], "text"}
JOB_UPDATE = "job.update"  # to user_group(): {"type", "job": {...}, "text"}
WORKER_WAKEUP = "worker.wakeup"  # to WAKEUP_GROUP: {"type"}
MESSAGE_KINDS = {JOB_PROGRESS: "progress", JOB_UPDATE: "update", WORKER_WAKEUP: "wakeup"}
"""The `kind` label of batchfetch_progress_messages_{sent,dropped}_total."""

# A send that takes longer than this counts as an outage (a hung Redis must not stall a worker).
SEND_TIMEOUT = 2.0
# After a failed send, skip sends for this long instead of trying (and failing) once per message.
RETRY_AFTER = 1.0
# A restarted Redis fails a few more sends on connections pooled before the restart: failures this soon
# after a recovery belong to the same outage and are not logged again.
SETTLE_SECONDS = 10.0
# Errors that mean "the channel layer is unreachable" (TimeoutError is an OSError).
LAYER_ERRORS = (RedisError, OSError)


def job_group(job_id: uuid.UUID | str) -> str:
    return f"job.{uuid.UUID(str(job_id)).hex}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


class _Outage:
    """Tracks whether the channel layer is reachable; logs each outage once, at its start and end.

    Shared by every loop and thread of the process (sync views publish from
    their own threads), hence the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._recovered_at = float("-inf")
        self._quiet = False
        """True while the current failure is an aftershock of an outage already logged."""

    @property
    def down(self) -> bool:
        return self._down_since is not None

    @property
    def settling(self) -> bool:
        """Down, but only as an aftershock of an outage that just ended (see SETTLE_SECONDS)."""
        return self._down_since is not None and self._quiet

    def should_try(self) -> bool:
        """False for RETRY_AFTER seconds after a failure."""
        return time.monotonic() >= self._retry_at

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = now
                self._quiet = now - self._recovered_at < SETTLE_SECONDS
            self._retry_at = now + RETRY_AFTER
            quiet = self._quiet
        if first and quiet:
            logger.debug("Channel layer failed again just after an outage (%s: %s)", type(exc).__name__, exc)
        elif first:
            logger.warning(
                "Channel layer unreachable (%s: %s); live updates and wake-ups are paused, workers keep polling",
                type(exc).__name__,
                exc,
            )

    def succeeded(self) -> None:
        quiet = False
        with self._lock:
            since, self._down_since, self._retry_at = self._down_since, None, 0.0
            if since is not None:
                quiet, self._recovered_at = self._quiet, time.monotonic()
        if since is not None and not quiet:
            logger.warning("Channel layer reachable again after %.1f s; live updates resumed", time.monotonic() - since)


outage = _Outage()


async def group_send(group: str, message: dict[str, Any]) -> bool:
    """Send `message` to `group`; True if it was handed to the layer.

    Never raises for an unreachable layer (see the module docstring); only
    cancellation propagates.
    """
    layer = get_channel_layer()
    if layer is None:
        return False
    kind = MESSAGE_KINDS.get(message.get("type", ""), "other")
    if not outage.should_try():
        metrics.count_message(kind, sent=False)
        return False
    try:
        async with asyncio.timeout(SEND_TIMEOUT):
            await layer.group_send(group, message)
    except LAYER_ERRORS as exc:
        outage.failed(exc)
        metrics.count_message(kind, sent=False)
        return False
    outage.succeeded()
    metrics.count_message(kind, sent=True)
    return True


def progress_message(job: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """A `job.progress` group message. `text` is what the job's sockets send, encoded here once: a
    consumer forwards it as is instead of encoding the message again for each of its watchers."""
    text = json.dumps({"type": "progress", "job": job, "results": results})
    return {"type": JOB_PROGRESS, "job": job, "results": results, "text": text}


def update_message(job: dict[str, Any]) -> dict[str, Any]:
    """A `job.update` group message (`text`: what the list sockets send, as in `progress_message`)."""
    return {"type": JOB_UPDATE, "job": job, "text": json.dumps({"type": "job", "job": job})}


async def wake_workers() -> None:
    """Tell the workers a job is waiting; an idle one claims it within ~100 ms instead of at its next poll."""
    await group_send(WAKEUP_GROUP, {"type": WORKER_WAKEUP})


async def publish_job_update(job: Job) -> None:
    """Announce a job's new state (after submit or cancel) to its owner's pages.

    A `cancelling` or `pausing` job also wakes the workers: the one running it
    then checks the job's status at once instead of at its next check (<= 0.5 s).
    """
    data = job_to_dict(job)
    await group_send(user_group(job.owner_id), update_message(data))
    await group_send(job_group(job.pk), progress_message(data, []))
    if job.status in (Job.Status.CANCELLING, Job.Status.PAUSING):
        await wake_workers()


def wake_workers_sync() -> None:
    """`wake_workers()` for sync code (views, admin actions, the shell)."""
    async_to_sync(wake_workers)()


def publish_job_update_sync(job: Job) -> None:
    """`publish_job_update()` for sync code (views, admin actions, the shell)."""
    async_to_sync(publish_job_update)(job)
