"""save_bodies: the worker stores complete bodies through Django's storage; the owner downloads them."""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.test import AsyncClient

from jobs.models import Job, Result
from jobs.queue import control
from tests.conftest import MEMORY_LAYER
from tests.target import TargetServer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def media_root(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.CHANNEL_LAYERS = MEMORY_LAYER
    return settings.MEDIA_ROOT


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


@pytest.fixture
def job(owner: Any, target: TargetServer) -> Job:
    urls = [target.url("/bytes/100"), target.url("/gzip-bomb?mb=1"), target.url("/bytes/2000000"), target.url("/hang")]
    job = control.enqueue_job(
        owner=owner, urls=urls, name="Bodies", concurrency=4, timeout=2,
        options={"save_bodies": True, "max_bytes": 1024 * 1024 + 10, "retries": 0},
    )  # fmt: skip
    # The third URL is over the cap and the fourth times out: neither body is kept.
    call_command("runworker", "--batch", "--concurrency", "10")
    job.refresh_from_db()
    return job


def test_complete_bodies_are_stored_and_incomplete_ones_are_not(job: Job, media_root: Path) -> None:
    rows = list(Result.objects.filter(job=job).order_by("position"))
    assert [(row.outcome, row.error_class) for row in rows] == [
        ("succeeded", ""), ("succeeded", ""), ("failed", "too_large"), ("failed", "timeout")
    ]
    assert [row.body for row in rows] == [f"bodies/{job.pk}/0", f"bodies/{job.pk}/1", "", ""]
    assert (media_root / rows[0].body).read_bytes() == b"x" * 100
    decoded = (media_root / rows[1].body).read_bytes()
    assert decoded == bytes(1024 * 1024)  # stored decoded, and its sha256 says so
    assert hashlib.sha256(decoded).hexdigest() == rows[1].sha256
    assert sorted(path.name for path in (media_root / "bodies" / str(job.pk)).iterdir()) == ["0", "1"]


async def test_owner_downloads_one_body_and_the_zip(job: Job, owner: Any, django_user_model: Any) -> None:
    client = AsyncClient()
    await client.aforce_login(owner)

    response = await client.get(f"/api/jobs/{job.id}/results/0/body")
    assert response.status_code == 200
    assert (response["Content-Type"], response["X-Content-Type-Options"]) == ("application/octet-stream", "nosniff")
    assert b"".join([chunk async for chunk in response.streaming_content]) == b"x" * 100
    assert (await client.get(f"/api/jobs/{job.id}/results/2/body")).status_code == 404  # not kept

    response = await client.get(f"/api/jobs/{job.id}/bodies.zip")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    data = b"".join([chunk async for chunk in response.streaming_content])
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["bodies/000000.bin", "bodies/000001.bin", "index.csv"]
        assert archive.read("bodies/000000.bin") == b"x" * 100
        assert archive.read("bodies/000001.bin") == bytes(1024 * 1024)
        index = list(csv.DictReader(io.StringIO(archive.read("index.csv").decode())))
    assert [(row["file"], row["position"], row["bytes"]) for row in index] == [
        ("bodies/000000.bin", "0", "100"), ("bodies/000001.bin", "1", str(1024 * 1024))
    ]

    stranger = await sync_to_async(django_user_model.objects.create_user)(username="stranger")
    other = AsyncClient()
    await other.aforce_login(stranger)
    assert (await other.get(f"/api/jobs/{job.id}/results/0/body")).status_code == 404
    assert (await other.get(f"/api/jobs/{job.id}/bodies.zip")).status_code == 404
    assert (await AsyncClient().get(f"/api/jobs/{job.id}/bodies.zip")).status_code == 401


def test_deleting_the_job_deletes_its_bodies(job: Job, media_root: Path) -> None:
    directory = media_root / "bodies" / str(job.pk)
    assert directory.is_dir()
    job.delete()
    assert not directory.exists()
