"""`JobPublisher` on a real Redis: coalescing to the max rate, message size, the final state
(jobs/progress/publisher.py)."""

from __future__ import annotations

import asyncio
import time

from jobs.models import Job, Result
from jobs.progress import groups
from jobs.progress.publisher import MAX_RESULTS_PER_MESSAGE, JobPublisher
from tests.progress.conftest import drain, job, subscribe


def row(position: int) -> Result:
    return Result(position=position, url=f"http://127.0.0.1:9/{position}", outcome="succeeded", status_code=200)


async def test_publisher_coalesces_to_the_max_rate_and_loses_no_row() -> None:
    the_job = job()
    channel = await subscribe(groups.job_group(the_job.pk), groups.user_group(7))
    started = time.monotonic()
    async with JobPublisher(the_job, max_rate=10) as publisher:
        for position in range(200):  # a result every 5 ms: 200 updates in ~1 s
            the_job.succeeded = position + 1
            publisher.update(the_job, [row(position)])
            await asyncio.sleep(0.005)
    elapsed = time.monotonic() - started
    messages = await drain(channel)

    progress_messages = [m for m in messages if m["type"] == groups.JOB_PROGRESS]
    updates = [m for m in messages if m["type"] == groups.JOB_UPDATE]
    assert len(progress_messages) <= 10 * elapsed + 2
    assert len(progress_messages) >= 5  # coalesced, not withheld
    assert len(updates) == len(progress_messages) == publisher.messages
    assert [r["position"] for m in progress_messages for r in m["results"]] == list(range(200))
    assert progress_messages[-1]["job"]["succeeded"] == 200 == updates[-1]["job"]["done"]
    assert progress_messages[-1]["job"]["id"] == str(the_job.pk)


async def test_a_burst_is_capped_to_the_newest_rows() -> None:
    the_job = job()
    channel = await subscribe(groups.job_group(the_job.pk))
    async with JobPublisher(the_job, max_rate=10) as publisher:
        publisher.update(the_job)
        await asyncio.sleep(0.05)  # the first message goes out; the burst waits for the next one
        publisher.update(the_job, [row(p) for p in range(1200)])
    messages = await drain(channel)

    sizes = [len(m["results"]) for m in messages]
    assert sizes == [0, MAX_RESULTS_PER_MESSAGE]
    assert messages[-1]["results"][-1]["position"] == 1199


async def test_the_final_state_is_sent_on_close() -> None:
    the_job = job()
    channel = await subscribe(groups.job_group(the_job.pk))
    async with JobPublisher(the_job, max_rate=2) as publisher:
        publisher.update(the_job)
        the_job.status = Job.Status.COMPLETED
        publisher.update(the_job)
    messages = await drain(channel)
    assert messages[-1]["job"]["status"] == "completed"


async def test_the_final_state_does_not_wait_for_the_pause_between_messages() -> None:
    the_job = job()
    channel = await subscribe(groups.job_group(the_job.pk))
    publisher = JobPublisher(the_job, max_rate=0.05)  # 20 s between two progress messages
    async with asyncio.timeout(5):
        async with publisher:
            publisher.update(the_job)
            await asyncio.sleep(0.05)  # the first message goes out; the pause starts
            the_job.status = Job.Status.COMPLETED
            publisher.update(the_job)
    messages = await drain(channel)
    assert [m["job"]["status"] for m in messages] == ["running", "completed"]
