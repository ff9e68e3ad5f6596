"""Retention: `purge_jobs`, the worker's daily purge, and deleting a job (admin, API) with its saved bodies."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs.models import Chunk, Job, Result
from jobs.ops import retention
from jobs.queue import control
from tests import services
from tests.conftest import MEMORY_LAYER
from tests.target import TargetServer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def media_root(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.CHANNEL_LAYERS = MEMORY_LAYER
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return settings.MEDIA_ROOT


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


def body_files(media_root: Path) -> list[Path]:
    return sorted(path for path in (media_root / "bodies").rglob("*") if path.is_file())


def purge(*args: str) -> str:
    out = io.StringIO()
    call_command("purge_jobs", *args, stdout=out)
    return out.getvalue()


def fake_job(owner: Any, *, urls: int, status: str, finished_ago: timedelta | None = None, bodies: int = 0) -> Job:
    """A job with `urls` rows in `status`, `bodies` saved bodies, finished `finished_ago` ago."""
    job = control.enqueue_job(owner=owner, urls=[f"http://h.example/{i}" for i in range(urls)], name=status,
                             concurrency=2, timeout=1, options={"save_bodies": bodies > 0})  # fmt: skip
    finished = timezone.now() - finished_ago if finished_ago is not None else None
    Job.objects.filter(pk=job.pk).update(status=status, finished_at=finished)
    for position in range(bodies):
        default_storage.save(f"bodies/{job.pk}/{position}", ContentFile(b"body %d" % position))
    job.refresh_from_db()
    return job


def test_purge_removes_50_finished_jobs_rows_and_bodies_and_a_running_job_survives(
    owner: Any, target: TargetServer, media_root: Path
) -> None:
    urls = [target.url("/bytes/10"), target.url("/status/404"), target.url("/ok")]
    for _ in range(50):
        control.enqueue_job(owner=owner, urls=urls, name="old", concurrency=3, timeout=5,
                           options={"save_bodies": True, "retries": 0})  # fmt: skip
    call_command("runworker", "--batch", "--concurrency", "50", "--max-jobs", "8")
    assert set(Job.objects.values_list("status", flat=True)) == {Job.Status.COMPLETED}
    assert len(body_files(media_root)) == 150  # every body was read completely, the 404's too
    running = fake_job(owner, urls=4, status=Job.Status.RUNNING, bodies=2)
    queued = fake_job(owner, urls=2, status=Job.Status.QUEUED)

    dry = purge("--older-than", "0d", "--dry-run")
    assert dry == "Would remove 50 jobs, 150 results, 150 saved bodies (dry run: nothing was deleted).\n"
    assert Job.objects.count() == 52 and Result.objects.count() == 156 and len(body_files(media_root)) == 152

    assert purge("--older-than", "0d") == "Removed 50 jobs, 150 results, 150 saved bodies.\n"
    assert set(Job.objects.values_list("pk", flat=True)) == {running.pk, queued.pk}
    assert Result.objects.count() == 6 and Chunk.objects.exclude(job__in=[running, queued]).count() == 0
    assert [path.parent.name for path in body_files(media_root)] == [str(running.pk)] * 2
    assert sorted(path.name for path in (media_root / "bodies").iterdir()) == [str(running.pk)]  # no empty dirs
    assert purge("--older-than", "0d") == "Removed 0 jobs, 0 results, 0 saved bodies.\n"


def test_older_than_and_status_pick_the_jobs(owner: Any) -> None:
    old_done = fake_job(owner, urls=3, status=Job.Status.COMPLETED, finished_ago=timedelta(days=40))
    old_failed = fake_job(owner, urls=2, status=Job.Status.FAILED, finished_ago=timedelta(days=40))
    recent = fake_job(owner, urls=2, status=Job.Status.COMPLETED, finished_ago=timedelta(days=2))
    old_paused = fake_job(owner, urls=2, status=Job.Status.PAUSED)
    Job.objects.filter(pk=old_paused.pk).update(created_at=timezone.now() - timedelta(days=90))
    never_started = fake_job(owner, urls=1, status=Job.Status.CANCELLED)  # no finished_at: its creation counts
    Job.objects.filter(pk=never_started.pk).update(created_at=timezone.now() - timedelta(days=31))

    assert purge("--older-than", "30d", "--status", "failed") == "Removed 1 jobs, 2 results, 0 saved bodies.\n"
    assert not Job.objects.filter(pk=old_failed.pk).exists()
    assert purge("--older-than", "30d") == "Removed 2 jobs, 4 results, 0 saved bodies.\n"
    assert set(Job.objects.values_list("pk", flat=True)) == {recent.pk, old_paused.pk}
    assert not Job.objects.filter(pk=old_done.pk).exists()

    with pytest.raises(CommandError, match="only finished jobs"):
        call_command("purge_jobs", "--older-than", "1d", "--status", "running")
    with pytest.raises(CommandError, match="30d, 12h"):
        call_command("purge_jobs", "--older-than", "30 days")
    with pytest.raises(CommandError, match="required"):
        call_command("purge_jobs")


def test_a_large_job_is_deleted_in_bounded_statements(owner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "ROWS_PER_DELETE", 40)
    monkeypatch.setattr(retention, "BATCH_JOBS", 2)
    for _ in range(3):
        fake_job(owner, urls=100, status=Job.Status.COMPLETED, finished_ago=timedelta(days=1))
    with CaptureQueriesContext(connection) as queries:
        removed = retention.purge(older_than=timedelta(hours=1))
    assert (removed.jobs, removed.results) == (3, 300)
    result_table = Result._meta.db_table
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith(f'DELETE FROM "{result_table}"')]
    assert len(deletes) == 3 * 3 + 3  # positions 0-39, 40-79, 80-99 per job, then none left with the job row
    assert all('"position" <' in sql for sql in deletes[:3])
    job_reads = [q["sql"] for q in queries.captured_queries if "LIMIT 2" in q["sql"]]
    assert len(job_reads) == 3  # two pages of jobs, then an empty one


def test_the_worker_purges_when_the_retention_setting_is_set(
    live_database_url: str, redis_url: str, tmp_path: Path, owner: Any
) -> None:
    old = fake_job(owner, urls=3, status=Job.Status.COMPLETED, finished_ago=timedelta(days=3))
    recent = fake_job(owner, urls=3, status=Job.Status.COMPLETED, finished_ago=timedelta(hours=1))
    running = fake_job(owner, urls=3, status=Job.Status.CANCELLING, finished_ago=timedelta(days=9))
    env = services.product_env(database_url=live_database_url, redis_url=redis_url,
                               extra={"JOBS_RETENTION_DAYS": "2"})  # fmt: skip
    argv = [sys.executable, "manage.py", "runworker", "--concurrency", "4"]
    worker = services.start_process("runworker", argv, env=env, cwd=services.BASE_DIR, log_path=tmp_path / "w.log")
    try:
        deadline = time.monotonic() + 30
        while Job.objects.filter(pk=old.pk).exists():
            assert time.monotonic() < deadline, worker.log_tail()
            assert worker.poll() is None, worker.log_tail()
            time.sleep(0.1)
    finally:
        worker.stop()
    assert set(Job.objects.values_list("pk", flat=True)) == {recent.pk, running.pk}
    assert "Retention (2 days): removed 1 jobs, 3 results, 0 saved bodies" in (tmp_path / "w.log").read_text()


def test_deleting_a_job_in_the_admin_deletes_its_bodies_but_an_unfinished_job_stays(
    owner: Any, django_user_model: Any, media_root: Path
) -> None:
    done = fake_job(owner, urls=3, status=Job.Status.COMPLETED, finished_ago=timedelta(0), bodies=3)
    running = fake_job(owner, urls=3, status=Job.Status.RUNNING, bodies=1)
    admin = Client()
    admin.force_login(django_user_model.objects.create_superuser(username="root", password="x"))

    page = admin.get(f"/admin/jobs/job/{done.pk}/delete/")
    assert page.status_code == 200 and b"saved bodies: 3" in page.content.lower()
    response = admin.post(f"/admin/jobs/job/{done.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Job.objects.filter(pk=done.pk).exists() and not Result.objects.filter(job_id=done.pk).exists()
    assert not (media_root / "bodies" / str(done.pk)).exists()

    page = admin.get(f"/admin/jobs/job/{running.pk}/delete/")
    assert page.status_code == 200 and b"Cannot delete job" in page.content and b"cancel it first" in page.content
    admin.post(f"/admin/jobs/job/{running.pk}/delete/", {"post": "yes"})
    response = admin.post("/admin/jobs/job/", {"action": "delete_selected", "_selected_action": [running.pk],
                                               "post": "yes"})  # fmt: skip
    assert Job.objects.filter(pk=running.pk).exists() and len(body_files(media_root)) == 1


def test_deleting_a_job_through_the_api_deletes_its_bodies(owner: Any, bob: Any, media_root: Path) -> None:
    done = fake_job(owner, urls=2, status=Job.Status.FAILED, finished_ago=timedelta(0), bodies=2)
    running = fake_job(owner, urls=2, status=Job.Status.RUNNING, bodies=1)
    client, stranger = Client(), Client()
    client.force_login(owner)
    stranger.force_login(bob)
    assert stranger.delete(f"/api/jobs/{done.pk}/").status_code == 404
    response = client.delete(f"/api/jobs/{running.pk}/")
    assert response.status_code == 409 and "cancel" in response.json()["error"]
    assert client.delete(f"/api/jobs/{done.pk}/").status_code == 204
    assert client.get(f"/api/jobs/{done.pk}/").status_code == 404
    assert not Result.objects.filter(job_id=done.pk).exists()
    assert [path.parent.name for path in body_files(media_root)] == [str(running.pk)]


def test_a_deleted_jobs_bodies_go_however_it_is_deleted(owner: Any, media_root: Path) -> None:
    """The receiver covers the ORM's deletes too: inside a transaction (as the admin's delete view runs), a
    queryset delete, and a user deleted with their jobs."""
    first = fake_job(owner, urls=1, status=Job.Status.COMPLETED, bodies=1)
    with transaction.atomic():
        first.delete()  # the bodies go at the commit, when first.pk is already None
    assert body_files(media_root) == []
    second = fake_job(owner, urls=1, status=Job.Status.COMPLETED, bodies=1)
    Job.objects.filter(pk=second.pk).delete()
    assert body_files(media_root) == []
    fake_job(owner, urls=1, status=Job.Status.COMPLETED, bodies=1)
    owner.delete()
    assert body_files(media_root) == []
