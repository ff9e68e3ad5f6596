"""The wake-up listener on a real Redis: prompt delivery, outages, prompt cancellation (jobs/progress/wakeups.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from jobs.progress import groups, wakeups


async def cancel_and_wait(task: asyncio.Task[Any], *, within: float = 1.0) -> None:
    """Cancel `task`; fail (rather than hang) unless it has finished, cancelled, within `within` seconds."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=within)
    assert done, f"still running {within} s after cancel()"
    assert task.cancelled()



async def test_listener_delivers_wakeups_quickly() -> None:
    woken = asyncio.Event()
    listener = asyncio.create_task(wakeups.listen_for_wakeups(woken.set))
    try:
        # Until it has joined the group, wake-ups go nowhere: knock until one arrives.
        async with asyncio.timeout(5):
            while not woken.is_set():
                await groups.wake_workers()
                await asyncio.sleep(0.05)
        woken.clear()
        sent = time.monotonic()
        await groups.wake_workers()
        async with asyncio.timeout(1):
            await woken.wait()
        assert time.monotonic() - sent < 0.1
    finally:
        await cancel_and_wait(listener)


async def test_listener_survives_an_outage_and_catches_up(restartable_redis: Any) -> None:
    woken: list[float] = []
    listener = asyncio.create_task(wakeups.listen_for_wakeups(lambda: woken.append(time.monotonic()), max_backoff=0.2))
    try:
        await asyncio.sleep(0.5)
        assert not listener.done() and not woken  # retrying quietly, not crashed
        await asyncio.to_thread(restartable_redis)
        # Back: it re-joins and calls back once, since wake-ups sent meanwhile were lost.
        async with asyncio.timeout(5):
            while not woken:
                await asyncio.sleep(0.02)
        await asyncio.sleep(groups.RETRY_AFTER)
        count = len(woken)
        await groups.wake_workers()
        async with asyncio.timeout(2):
            while len(woken) == count:
                await asyncio.sleep(0.01)
    finally:
        await cancel_and_wait(listener)


async def test_cancelling_the_listener_is_prompt_during_an_outage_and_while_receiving(restartable_redis: Any) -> None:
    # During an outage: connecting, or waiting to retry.
    for delay in (0.0, 0.05, 0.3):
        listener = asyncio.create_task(wakeups.listen_for_wakeups(lambda: None, max_backoff=0.2))
        await asyncio.sleep(delay)
        await cancel_and_wait(listener)
    # Receiving, right after a wake-up: the listener is then writing its next commands to Redis,
    # where a cancellation is most easily lost (see LosesCancellations).
    await asyncio.to_thread(restartable_redis)
    for _ in range(10):
        woken = asyncio.Event()
        listener = asyncio.create_task(wakeups.listen_for_wakeups(woken.set))
        async with asyncio.timeout(5):
            while not woken.is_set():
                await groups.wake_workers()
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
    monkeypatch.setattr(wakeups, "get_channel_layer", lambda: layer)
    listener = asyncio.create_task(wakeups.listen_for_wakeups(lambda: None))
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
    monkeypatch.setattr(wakeups, "get_channel_layer", lambda: layer)
    monkeypatch.setattr(wakeups, "STOP_TIMEOUT", 0.5)
    listener = asyncio.create_task(wakeups.listen_for_wakeups(lambda: None))
    try:
        async with asyncio.timeout(1):
            await layer.receiving.wait()
        await cancel_and_wait(listener, within=0.5 + wakeups.LEAVE_TIMEOUT + 0.5)
        assert "abandoned" in caplog.text
        assert layer.discarded == ["worker.test!abc"]
    finally:
        layer.stop_losing()
        listener.cancel()
