"""Monitoring on real parts: `runworker` processes tick the schedules, compare runs and send the webhooks.

The target is a loopback server whose answers the test changes between runs;
the webhook receiver is another loopback server. The test drives the API
in-process (Django's client, same database and Redis) while the workers run
as separate processes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from jobs.models import Job
from jobs.monitoring import webhooks
from jobs.monitoring_models import Delivery, JobMonitor, Schedule, ScheduleRun
from tests import services
from tests.monitoring.helpers import webhook_receiver
from tests.target import TargetServer

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def workers(database_url: str, redis_url: str, workdir: Path, *, count: int, **env: str) -> Iterator[list[Any]]:
    """`count` runworker processes on the test database; stopped (SIGTERM) at the end."""
    environment = services.product_env(database_url=database_url, redis_url=redis_url, extra=env)
    started = []
    try:
        for n in range(count):
            started.append(services.start_process(
                f"runworker-{n}", [sys.executable, "manage.py", "runworker", "--concurrency", "20"],
                env=environment, cwd=services.BASE_DIR, log_path=workdir / f"worker-{n}.log",
            ))  # fmt: skip
        yield started
    finally:
        for process in started:
            process.stop(timeout=20)
        for process in started:
            print(process.log_tail(60))


def wait_until(predicate: Callable[[], Any], *, timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


@pytest.mark.postgres
def test_three_workers_start_one_job_per_tick(ann: Any, live_database_url: str, redis_url: str, tmp_path: Path) -> None:
    with TargetServer() as target, workers(live_database_url, redis_url, tmp_path, count=3):
        time.sleep(3)  # the workers are up (Django import, connections) before the first tick
        start = timezone.now()
        schedule = Schedule.objects.create(
            owner=ann, name="every 2 s", urls=[target.url("/ok")], options={"concurrency": 2, "timeout": 5.0},
            interval=2, next_run_at=start + timedelta(seconds=2),
        )  # fmt: skip
        time.sleep(10.2)
        Schedule.objects.filter(pk=schedule.pk).update(enabled=False, next_run_at=None)
        runs = list(ScheduleRun.objects.filter(schedule=schedule).order_by("due_at"))
        jobs = Job.objects.filter(monitor__schedule=schedule)
        ticks = 5  # at start + 2, 4, 6, 8, 10 s
        assert abs(len(runs) - ticks) <= 1, [(run.due_at, run.status) for run in runs]
        assert len({run.due_at for run in runs}) == len(runs)  # never two runs for one tick
        assert jobs.count() == sum(run.status == "started" for run in runs)
        assert all(run.status == "started" for run in runs), [run.reason for run in runs]
        wait_until(lambda: not jobs.exclude(status__in=Job.TERMINAL).exists(), what="the runs to end")
        assert set(jobs.values_list("status", flat=True)) == {"completed"}


def test_second_run_changes_and_signed_webhooks(ann: Any, live_database_url: str, redis_url: str, tmp_path: Path) -> None:
    client = Client()
    client.force_login(ann)
    secret = webhooks.rotate_secret(ann)
    pages = {"/flip": (200, b"fine"), "/edit": (200, b"version 1"), "/same": (200, b"same")}
    with webhook_receiver(script=[500, 500], pages=pages) as server, workers(
        live_database_url, redis_url, tmp_path, count=1, MONITOR_WEBHOOK_BACKOFF="0.3"
    ):
        urls = [server.url(path) for path in pages]
        response = client.post("/api/schedules/", {
            "name": "watch", "urls": urls, "interval": 3600, "notify_url": server.url("/hook"),
            "notify_on": ["finished"],
        }, content_type="application/json")  # fmt: skip
        assert response.status_code == 201, response.content
        schedule_id = response.json()["id"]

        first = run_and_settle(client, schedule_id)
        assert client.get(f"/api/jobs/{first}/changes/").json()["previous"] is None
        # The receiver's script (500, 500, then 200s) is for this first webhook: let it go through first.
        wait_until(lambda: Delivery.objects.filter(status="delivered").count() == 1, what="the first webhook")
        with server.lock:
            server.pages["/flip"] = (500, b"broken")
            server.pages["/edit"] = (200, b"version 2")
        second = run_and_settle(client, schedule_id)

        data = client.get(f"/api/jobs/{second}/changes/").json()
        assert data["previous"] == first
        assert data["counts"] == {"new_failure": 1, "recovered": 0, "status_changed": 0, "content_changed": 1,
                                  "unchanged": 1}  # fmt: skip
        kinds = {row["url"]: row["kind"] for row in data["changes"]}
        assert kinds == {urls[0]: "new_failure", urls[1]: "content_changed", urls[2]: "unchanged"}
        page = client.get(f"/jobs/{second}/").content.decode()
        for kind, n in data["counts"].items():
            assert f'data-kind="{kind}">{n}</dd>' in page
        listed = [job["id"] for job in client.get(f"/api/jobs/?schedule={schedule_id}").json()["jobs"]]
        assert listed == [second, first]

        wait_until(lambda: Delivery.objects.filter(status="delivered").count() == 2, what="both webhooks")
        posts = server.received()
    by_delivery: dict[str, list[Any]] = {}
    for post in posts:
        assert post.path == "/hook"
        assert webhooks.verify(secret, post.body, post.headers["x-batchfetch-signature"])
        by_delivery.setdefault(post.headers["x-batchfetch-delivery"], []).append(post)
    # The first job's webhook met 500, 500, then 200 (third try); the second's went through at once.
    assert sorted(len(tries) for tries in by_delivery.values()) == [1, 3]
    assert {tries[0].json()["job"]["id"] for tries in by_delivery.values()} == {first, second}


def run_and_settle(client: Client, schedule_id: int) -> str:
    response = client.post(f"/api/schedules/{schedule_id}/run/")
    assert response.status_code == 201, response.content
    job_id = response.json()["job"]
    wait_until(lambda: JobMonitor.objects.filter(job_id=job_id, settled_at__isnull=False).exists(),
               what=f"job {job_id} to end and settle")  # fmt: skip
    return job_id


def test_a_metadata_webhook_is_refused_even_with_private_addresses_allowed(
    ann: Any, live_database_url: str, redis_url: str, tmp_path: Path
) -> None:
    client = Client()
    client.force_login(ann)
    with TargetServer() as target, workers(live_database_url, redis_url, tmp_path, count=1):
        data = {"urls": [target.url("/ok")], "notify_url": "http://169.254.169.254/latest/", "notify_on": ["finished"]}
        response = client.post("/api/jobs/", data, content_type="application/json")
        assert response.status_code == 201
        delivery = wait_until(lambda: Delivery.objects.exclude(status__in=["pending", "sending"]).first(),
                              what="the delivery to be decided")  # fmt: skip
    assert delivery.status == "refused" and "metadata" in delivery.last_error
    assert connection.vendor in ("sqlite", "postgresql")
