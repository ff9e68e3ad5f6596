"""Progress publishing on a real Redis: coalescing, message size, wake-ups, and Redis outages."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from jobs.progress import publisher as progress
from jobs.models import Job, Result
from tests import services
from tests.conftest import redis_layer_settings


@pytest.fixture(autouse=True)
def fresh_outage_state(monkeypatch: pytest.MonkeyPatch) -> None:
    # The outage tracker is per process; each test starts with the layer presumed up.
    monkeypatch.setattr(progress, "outage", progress._Outage())


def job(status: str = Job.Status.RUNNING, done: int = 0) -> Job:
    """An unsaved job: the publisher only serializes it."""
    return Job(id=uuid.uuid4(), owner_id=7, name="j", status=status, concurrency=2, timeout=1, total=10_000,
               succeeded=done)  # fmt: skip


def row(position: int) -> Result:
    return Result(position=position, url=f"http://127.0.0.1:9/{position}", outcome="succeeded", status_code=200)


async def subscribe(*groups: str) -> str:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    for group in groups:
        await layer.group_add(group, channel)
    return channel


async def drain(channel: str, *, quiet: float = 0.3) -> list[dict[str, Any]]:
    """Every message on `channel` until none arrives for `quiet` seconds."""
    layer = get_channel_layer()
    messages = []
    while True:
        try:
            async with asyncio.timeout(quiet):
                messages.append(await layer.receive(channel))
        except TimeoutError:
            return messages


async def cancel_and_wait(task: asyncio.Task[Any], *, within: float = 1.0) -> None:
    """Cancel `task`; fail (rather than hang) unless it has finished, cancelled, within `within` seconds."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=within)
    assert done, f"still running {within} s after cancel()"
    assert task.cancelled()


@pytest.fixture
def restartable_redis(tmp_path: Path, settings: Any) -> Iterator[Any]:
    """The channel layer on a port where no Redis runs yet; call the returned function to start one."""
    port = services.free_port()
    settings.CHANNEL_LAYERS = redis_layer_settings(f"redis://127.0.0.1:{port}/0")
    started: list[services.ManagedProcess] = []

    def start() -> None:
        started.append(services.start_redis(port=port, workdir=tmp_path / "redis"))

    yield start
    for process in started:
        process.stop()


async def test_publisher_coalesces_to_the_max_rate_and_loses_no_row() -> None:
    the_job = job()
    channel = await subscribe(progress.job_group(the_job.pk), progress.user_group(7))
    started = time.monotonic()
    async with progress.JobPublisher(the_job, max_rate=10) as publisher:
        for position in range(200):  # a result every 5 ms: 200 updates in ~1 s
            the_job.succeeded = position + 1
            publisher.update(the_job, [row(position)])
            await asyncio.sleep(0.005)
    elapsed = time.monotonic() - started
    messages = await drain(channel)

    progress_messages = [m for m in messages if m["type"] == progress.JOB_PROGRESS]
    updates = [m for m in messages if m["type"] == progress.JOB_UPDATE]
    assert len(progress_messages) <= 10 * elapsed + 2
    assert len(progress_messages) >= 5  # coalesced, not withheld
    assert len(updates) == len(progress_messages) == publisher.messages
    assert [r["position"] for m in progress_messages for r in m["results"]] == list(range(200))
    assert progress_messages[-1]["job"]["succeeded"] == 200 == updates[-1]["job"]["done"]
    assert progress_messages[-1]["job"]["id"] == str(the_job.pk)


async def test_a_burst_is_capped_to_the_newest_rows() -> None:
    the_job = job()
    channel = await subscribe(progress.job_group(the_job.pk))
    async with progress.JobPublisher(the_job, max_rate=10) as publisher:
        publisher.update(the_job)
        await asyncio.sleep(0.05)  # the first message goes out; the burst waits for the next one
        publisher.update(the_job, [row(p) for p in range(1200)])
    messages = await drain(channel)

    sizes = [len(m["results"]) for m in messages]
    assert sizes == [0, progress.MAX_RESULTS_PER_MESSAGE]
    assert messages[-1]["results"][-1]["position"] == 1199


async def test_the_final_state_is_sent_on_close() -> None:
    the_job = job()
    channel = await subscribe(progress.job_group(the_job.pk))
    async with progress.JobPublisher(the_job, max_rate=2) as publisher:
        publisher.update(the_job)
        the_job.status = Job.Status.COMPLETED
        publisher.update(the_job)
    messages = await drain(channel)
    assert messages[-1]["job"]["status"] == "completed"


async def test_the_final_state_does_not_wait_for_the_pause_between_messages() -> None:
    the_job = job()
    channel = await subscribe(progress.job_group(the_job.pk))
    publisher = progress.JobPublisher(the_job, max_rate=0.05)  # 20 s between two progress messages
    async with asyncio.timeout(5):
        async with publisher:
            publisher.update(the_job)
            await asyncio.sleep(0.05)  # the first message goes out; the pause starts
            the_job.status = Job.Status.COMPLETED
            publisher.update(the_job)
    messages = await drain(channel)
    assert [m["job"]["status"] for m in messages] == ["running", "completed"]


async def test_publish_job_update_reaches_both_groups_and_a_cancel_wakes_workers() -> None:
    running, cancelling = job(), job(Job.Status.CANCELLING)
    channel = await subscribe(
        progress.job_group(running.pk), progress.job_group(cancelling.pk), progress.user_group(7), progress.WAKEUP_GROUP
    )

    await progress.publish_job_update(running)
    first = await drain(channel)
    await progress.publish_job_update(cancelling)
    second = await drain(channel)

    assert sorted(m["type"] for m in first) == ["job.progress", "job.update"]
    assert first[0]["job"]["id"] == str(running.pk)
    assert sorted(m["type"] for m in second) == ["job.progress", "job.update", "worker.wakeup"]


def test_sync_wrappers_work_from_sync_code() -> None:
    the_job = job()
    channel = async_to_sync(subscribe)(progress.user_group(7), progress.WAKEUP_GROUP)

    progress.publish_job_update_sync(the_job)
    progress.wake_workers_sync()

    messages = async_to_sync(drain)(channel)
    assert [m["type"] for m in messages] == ["job.update", "worker.wakeup"]


async def test_redis_outage_is_logged_once_never_raised_and_publishing_resumes(
    restartable_redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobs.progress")
    the_job = job()
    for _ in range(20):
        await progress.wake_workers()
        await progress.publish_job_update(the_job)
    assert not await progress.group_send("any", {"type": "x"})
    async with progress.JobPublisher(the_job, max_rate=50) as publisher:
        for _ in range(5):
            publisher.update(the_job)
            await asyncio.sleep(0.03)
    down = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(down) == 1 and down[0].levelno == logging.WARNING

    await asyncio.to_thread(restartable_redis)
    channel = await subscribe(progress.job_group(the_job.pk))
    await asyncio.sleep(progress.RETRY_AFTER)  # sends are skipped for a moment after a failure
    await progress.publish_job_update(the_job)

    assert [m["type"] for m in await drain(channel)] == ["job.progress"]
    assert [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1


async def test_listener_delivers_wakeups_quickly() -> None:
    woken = asyncio.Event()
    listener = asyncio.create_task(progress.listen_for_wakeups(woken.set))
    try:
        # Until it has joined the group, wake-ups go nowhere: knock until one arrives.
        async with asyncio.timeout(5):
            while not woken.is_set():
                await progress.wake_workers()
                await asyncio.sleep(0.05)
        woken.clear()
        sent = time.monotonic()
        await progress.wake_workers()
        async with asyncio.timeout(1):
            await woken.wait()
        assert time.monotonic() - sent < 0.1
    finally:
        await cancel_and_wait(listener)


async def test_listener_survives_an_outage_and_catches_up(restartable_redis: Any) -> None:
    woken: list[float] = []
    listener = asyncio.create_task(progress.listen_for_wakeups(lambda: woken.append(time.monotonic()), max_backoff=0.2))
    try:
        await asyncio.sleep(0.5)
        assert not listener.done() and not woken  # retrying quietly, not crashed
        await asyncio.to_thread(restartable_redis)
        # Back: it re-joins and calls back once, since wake-ups sent meanwhile were lost.
        async with asyncio.timeout(5):
            while not woken:
                await asyncio.sleep(0.02)
        await asyncio.sleep(progress.RETRY_AFTER)
        count = len(woken)
        await progress.wake_workers()
        async with asyncio.timeout(2):
            while len(woken) == count:
                await asyncio.sleep(0.01)
    finally:
        await cancel_and_wait(listener)


async def test_cancelling_the_listener_is_prompt_during_an_outage_and_while_receiving(restartable_redis: Any) -> None:
    # During an outage: connecting, or waiting to retry.
    for delay in (0.0, 0.05, 0.3):
        listener = asyncio.create_task(progress.listen_for_wakeups(lambda: None, max_backoff=0.2))
        await asyncio.sleep(delay)
        await cancel_and_wait(listener)
    # Receiving, right after a wake-up: the listener is then writing its next commands to Redis,
    # where a cancellation is most easily lost (see LosesCancellations).
    await asyncio.to_thread(restartable_redis)
    for _ in range(10):
        woken = asyncio.Event()
        listener = asyncio.create_task(progress.listen_for_wakeups(woken.set))
        async with asyncio.timeout(5):
            while not woken.is_set():
                await progress.wake_workers()
                await asyncio.sleep(0.02)
        await cancel_and_wait(listener)


class LosesCancellations:
    """A channel layer whose receive() loses the first `lose` cancellations.

    As channels-redis's does now and then on Python 3.11: redis-py writes each
    command under asyncio.wait_for() (its default socket_timeout is 5 s), and
    3.11's wait_for() returns the command's result instead of raising when the
    cancellation arrives just after the write completed (python/cpython#86296).
    """

    def __init__(self, lose: int) -> None:
        self.lose = lose
        self.receiving = asyncio.Event()
        self.discarded: list[str] = []
        self.receivers: set[asyncio.Task[Any]] = set()

    async def new_channel(self, prefix: str = "specific") -> str:
        return f"{prefix}.test!abc"

    async def group_add(self, group: str, channel: str) -> None:
        pass

    async def group_discard(self, group: str, channel: str) -> None:
        self.discarded.append(channel)

    async def receive(self, channel: str) -> dict[str, Any]:
        self.receivers.add(asyncio.current_task())  # type: ignore[arg-type]
        self.receiving.set()
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if self.lose <= 0:
                    raise
                self.lose -= 1

    def stop_losing(self) -> None:
        self.lose = 0
        for task in self.receivers:
            task.cancel()


async def test_cancelling_the_listener_is_prompt_even_if_the_layer_loses_the_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layer = LosesCancellations(lose=1)
    monkeypatch.setattr(progress, "get_channel_layer", lambda: layer)
    listener = asyncio.create_task(progress.listen_for_wakeups(lambda: None))
    try:
        async with asyncio.timeout(1):
            await layer.receiving.wait()
        await cancel_and_wait(listener, within=1.0)
        assert layer.discarded == ["worker.test!abc"]  # and it left the group
    finally:
        layer.stop_losing()
        listener.cancel()


async def test_cancelling_the_listener_finishes_even_if_the_layer_never_lets_go(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    layer = LosesCancellations(lose=10**9)
    monkeypatch.setattr(progress, "get_channel_layer", lambda: layer)
    monkeypatch.setattr(progress, "STOP_TIMEOUT", 0.5)
    listener = asyncio.create_task(progress.listen_for_wakeups(lambda: None))
    try:
        async with asyncio.timeout(1):
            await layer.receiving.wait()
        await cancel_and_wait(listener, within=0.5 + progress.LEAVE_TIMEOUT + 0.5)
        assert "abandoned" in caplog.text
        assert layer.discarded == ["worker.test!abc"]
    finally:
        layer.stop_losing()
        listener.cancel()


def test_failures_just_after_a_recovery_belong_to_the_same_outage(caplog: pytest.LogCaptureFixture) -> None:
    """A restarted Redis fails a few more sends on stale pooled connections: still one outage in the log."""
    caplog.set_level(logging.DEBUG, logger="jobs.progress")
    outage = progress._Outage()
    outage.failed(ConnectionError("Connection refused"))
    outage.succeeded()
    outage.failed(ConnectionError("Connection closed by server."))  # an aftershock
    assert outage.down
    outage.succeeded()

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [m.split(" (")[0].split(" after")[0] for m in warnings] == [
        "Channel layer unreachable", "Channel layer reachable again"
    ]  # fmt: skip
