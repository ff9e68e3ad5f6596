"""Groups and messages on a real Redis: publish_job_update, the sync wrappers, and Redis outages
(jobs/progress/groups.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from jobs.models import Job
from jobs.progress import groups
from jobs.progress.publisher import JobPublisher
from tests.progress.conftest import drain, job, subscribe


async def test_publish_job_update_reaches_both_groups_and_a_cancel_wakes_workers() -> None:
    running, cancelling = job(), job(Job.Status.CANCELLING)
    channel = await subscribe(
        groups.job_group(running.pk), groups.job_group(cancelling.pk), groups.user_group(7), groups.WAKEUP_GROUP
    )

    await groups.publish_job_update(running)
    first = await drain(channel)
    await groups.publish_job_update(cancelling)
    second = await drain(channel)

    assert sorted(m["type"] for m in first) == ["job.progress", "job.update"]
    assert first[0]["job"]["id"] == str(running.pk)
    assert sorted(m["type"] for m in second) == ["job.progress", "job.update", "worker.wakeup"]


def test_sync_wrappers_work_from_sync_code() -> None:
    the_job = job()
    channel = async_to_sync(subscribe)(groups.user_group(7), groups.WAKEUP_GROUP)

    groups.publish_job_update_sync(the_job)
    groups.wake_workers_sync()

    messages = async_to_sync(drain)(channel)
    assert [m["type"] for m in messages] == ["job.update", "worker.wakeup"]


async def test_redis_outage_is_logged_once_never_raised_and_publishing_resumes(
    restartable_redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobs.progress")
    the_job = job()
    for _ in range(20):
        await groups.wake_workers()
        await groups.publish_job_update(the_job)
    assert not await groups.group_send("any", {"type": "x"})
    async with JobPublisher(the_job, max_rate=50) as publisher:
        for _ in range(5):
            publisher.update(the_job)
            await asyncio.sleep(0.03)
    down = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(down) == 1 and down[0].levelno == logging.WARNING

    await asyncio.to_thread(restartable_redis)
    channel = await subscribe(groups.job_group(the_job.pk))
    await asyncio.sleep(groups.RETRY_AFTER)  # sends are skipped for a moment after a failure
    await groups.publish_job_update(the_job)

    assert [m["type"] for m in await drain(channel)] == ["job.progress"]
    assert [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1


def test_failures_just_after_a_recovery_belong_to_the_same_outage(caplog: pytest.LogCaptureFixture) -> None:
    """A restarted Redis fails a few more sends on stale pooled connections: still one outage in the log."""
    caplog.set_level(logging.DEBUG, logger="jobs.progress")
    outage = groups._Outage()
    outage.failed(ConnectionError("Connection refused"))
    outage.succeeded()
    outage.failed(ConnectionError("Connection closed by server."))  # an aftershock
    assert outage.down
    outage.succeeded()

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [m.split(" (")[0].split(" after")[0] for m in warnings] == [
        "Channel layer unreachable", "Channel layer reachable again"
    ]  # fmt: skip
