"""Shared by the tests of jobs/progress/: a fresh outage tracker, unsaved jobs, subscribing to groups, a Redis
that starts late."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.layers import get_channel_layer

from jobs.models import Job
from jobs.progress import groups
from tests import services
from tests.conftest import redis_layer_settings


@pytest.fixture(autouse=True)
def fresh_outage_state(monkeypatch: pytest.MonkeyPatch) -> None:
    # The outage tracker is per process; each test starts with the layer presumed up.
    monkeypatch.setattr(groups, "outage", groups._Outage())


def job(status: str = Job.Status.RUNNING, done: int = 0) -> Job:
    """An unsaved job: the publisher only serializes it."""
    return Job(id=uuid.uuid4(), owner_id=7, name="j", status=status, concurrency=2, timeout=1, total=10_000,
               succeeded=done)  # fmt: skip



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
