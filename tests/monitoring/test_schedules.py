"""Schedules: validation (400 naming the field), CRUD, owner-only, run now, and the tick logic in-process."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from jobs.models import Job
from jobs.monitoring import schedules
from jobs.monitoring_models import JobMonitor, Schedule, ScheduleRun

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("memory_layer")]

URLS = ["http://a.example/", "http://b.example/x"]


def post(client: Client, path: str, data: Any) -> Any:
    return client.post(path, json.dumps(data), content_type="application/json")


def patch(client: Client, path: str, data: Any) -> Any:
    return client.patch(path, json.dumps(data), content_type="application/json")


def create(client: Client, **fields: Any) -> dict[str, Any]:
    response = post(client, "/api/schedules/", {"name": "nightly", "urls": URLS, "interval": 60, **fields})
    assert response.status_code == 201, response.content
    return response.json()


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"cron": "61 * * * *"}, "cron", "invalid cron expression"),
        ({"cron": "every day"}, "cron", "invalid cron expression"),
        ({"interval": 0}, "interval", "at least 1"),
        ({"interval": -5}, "interval", "at least 1"),
        ({"interval": "soon"}, "interval", "whole number"),
        ({"interval": 60, "notify_on": ["finished", "sometimes"]}, "notify_on", "unknown event 'sometimes'"),
        ({"interval": 60, "timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
        ({"interval": 60, "cron": "* * * * *"}, "cron", "not both"),
        ({}, "interval", "required"),
        ({"interval": 60, "notify_url": "ftp://x.example/"}, "notify_url", "not a webhook URL"),
        ({"interval": 60, "notify_email": "nobody"}, "notify_email", "not a valid email"),
        ({"interval": 60, "concurrency": 0}, "concurrency", ""),
        ({"interval": 60, "colour": "red"}, "colour", "unknown field"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_why(ann_client: Client, fields: dict, field: str, words: str) -> None:
    response = post(ann_client, "/api/schedules/", {"urls": URLS, **fields})
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert field in errors, errors
    assert words in str(errors[field])
    assert Schedule.objects.count() == 0


def test_bad_urls_name_their_index(ann_client: Client) -> None:
    response = post(ann_client, "/api/schedules/", {"urls": ["http://ok.example/", "nope"], "interval": 5})
    assert response.status_code == 400
    assert response.json()["errors"]["urls"][0]["index"] == 1


def test_bad_patch_is_a_400_and_changes_nothing(ann_client: Client) -> None:
    created = create(ann_client)
    response = patch(ann_client, f"/api/schedules/{created['id']}/", {"interval": 0})
    assert response.status_code == 400
    assert "interval" in response.json()["errors"]
    assert Schedule.objects.get().interval == 60


# --- CRUD ------------------------------------------------------------------------------------------


def test_create_show_patch_delete(ann_client: Client) -> None:
    before = timezone.now()
    created = create(ann_client, notify_url="http://hooks.example/x", notify_on=["failed", "changed"], timeout=4)
    assert created["interval"] == 60 and created["cron"] is None and created["timeout"] == 4.0
    assert created["notify_on"] == ["failed", "changed"]
    next_run = datetime.fromisoformat(created["next_run_at"])
    assert before + timedelta(seconds=59) <= next_run <= timezone.now() + timedelta(seconds=61)
    path = f"/api/schedules/{created['id']}/"
    assert ann_client.get(path).json()["urls"] == URLS
    assert [s["id"] for s in ann_client.get("/api/schedules/").json()["schedules"]] == [created["id"]]

    stopped = patch(ann_client, path, {"enabled": False}).json()
    assert stopped["enabled"] is False and stopped["next_run_at"] is None
    cron = patch(ann_client, path, {"cron": "0 3 * * *", "timezone": "Europe/Berlin", "enabled": True}).json()
    assert cron["cron"] == "0 3 * * *" and cron["interval"] is None
    local = datetime.fromisoformat(cron["next_run_at"]).astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (3, 0)

    assert ann_client.delete(path).status_code == 204
    assert ann_client.get(path).status_code == 404


def test_schedules_are_owner_only(ann_client: Client, bob: Any) -> None:
    created = create(ann_client)
    other = Client()
    other.force_login(bob)
    path = f"/api/schedules/{created['id']}/"
    assert other.get(path).status_code == 404
    assert patch(other, path, {"enabled": False}).status_code == 404
    assert other.delete(path).status_code == 404
    assert other.post(path + "run/").status_code == 404
    assert other.get("/api/schedules/").json()["schedules"] == []
    assert other.get(f"/api/jobs/?schedule={created['id']}").status_code == 400
    assert Client().get("/api/schedules/").status_code == 401


def test_run_now_starts_a_job_listed_under_the_schedule(ann_client: Client, ann: Any) -> None:
    created = create(ann_client)
    response = ann_client.post(f"/api/schedules/{created['id']}/run/")
    assert response.status_code == 201
    job_id = response.json()["job"]
    listed = ann_client.get(f"/api/jobs/?schedule={created['id']}").json()["jobs"]
    assert [job["id"] for job in listed] == [job_id]
    # Still queued: a second run now is skipped, recorded, and says why.
    again = ann_client.post(f"/api/schedules/{created['id']}/run/")
    assert again.status_code == 409 and "still queued" in again.json()["error"]
    assert list(ScheduleRun.objects.values_list("status", flat=True).order_by("id")) == ["started", "skipped"]


# --- ticks ------------------------------------------------------------------------------------------


def make_schedule(owner: Any, **fields: Any) -> Schedule:
    fields.setdefault("interval", 10)
    return Schedule.objects.create(
        owner=owner, name="s", urls=URLS, options={"concurrency": 5, "timeout": 3.0}, **fields
    )


def test_a_due_tick_starts_one_job_and_moves_on(ann: Any) -> None:
    now = timezone.now()
    schedule = make_schedule(ann, next_run_at=now - timedelta(seconds=1))
    outcome = schedules.tick(now=now)
    assert outcome.started == 1
    schedule.refresh_from_db()
    assert schedule.next_run_at == now + timedelta(seconds=9)  # on the grid of the first tick
    assert schedules.tick(now=now).runs == ()  # the same tick is not taken twice
    job = Job.objects.get()
    assert JobMonitor.objects.get(job=job).schedule == schedule and job.total == 2


def test_missed_ticks_run_once(ann: Any) -> None:
    now = timezone.now()
    schedule = make_schedule(ann, next_run_at=now - timedelta(seconds=95))  # 10 ticks missed
    assert schedules.tick(now=now).started == 1
    assert schedules.tick(now=now + timedelta(seconds=1)).runs == ()
    schedule.refresh_from_db()
    assert now < schedule.next_run_at <= now + timedelta(seconds=10)
    assert Job.objects.count() == 1


def test_a_tick_while_the_previous_run_goes_is_skipped(ann: Any) -> None:
    now = timezone.now()
    make_schedule(ann, next_run_at=now - timedelta(seconds=1))
    schedules.tick(now=now)
    later = now + timedelta(seconds=10)
    outcome = schedules.tick(now=later)
    assert [run.status for run in outcome.runs] == ["skipped"]
    assert "still queued" in outcome.runs[0].reason
    Job.objects.update(status=Job.Status.COMPLETED)
    assert schedules.tick(now=later + timedelta(seconds=10)).started == 1
    second = Job.objects.order_by("-created_at").first()
    first = Job.objects.order_by("created_at").first()
    assert JobMonitor.objects.get(job=second).previous == first


def test_a_stale_read_takes_no_tick(ann: Any) -> None:
    """The conditional update: a worker that read next_run_at before another took the tick changes nothing."""
    now = timezone.now()
    schedule = make_schedule(ann, next_run_at=now - timedelta(seconds=1))
    stale = Schedule.objects.get(pk=schedule.pk)
    assert schedules.tick(now=now).started == 1
    assert schedules._take_tick(stale, now) is None
    assert Job.objects.count() == 1


def test_cron_ticks_follow_the_time_zone(ann: Any) -> None:
    schedule = make_schedule(ann, interval=None, cron="30 2 * * *", timezone="America/New_York")
    after = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert schedules.next_tick(schedule, after=after) == datetime(2026, 7, 2, 6, 30, tzinfo=UTC)  # EDT: UTC-4


def test_disabled_schedules_do_not_tick(ann: Any) -> None:
    make_schedule(ann, enabled=False, next_run_at=timezone.now() - timedelta(seconds=5))
    assert schedules.tick().runs == ()
