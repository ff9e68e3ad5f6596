"""The admin: job history, search, per-job results, and the cancel / re-run actions."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs.models import Job, Result
from jobs.progress import groups
from jobs.queue import control

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_password_hashing")]  # admin_client has a password

CHANGELIST = "/admin/jobs/job/"


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="alice", password="x")


@pytest.fixture
def bob(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="bob", password="x")


def make_job(owner: Any, urls: list[str], name: str, **outcomes: str) -> Job:
    """A job with rows; `outcomes` maps "p<position>" to a final outcome, counters kept in step."""
    job = control.enqueue_job(owner=owner, urls=urls, name=name, concurrency=4, timeout=2.5)
    counts = {"succeeded": 0, "failed": 0, "cancelled": 0}
    for key, outcome in outcomes.items():
        Result.objects.filter(job=job, position=int(key[1:])).update(
            outcome=outcome, fetched_at=timezone.now(), attempts=1,
            status_code=200 if outcome == "succeeded" else None,
            error="connect: connection refused" if outcome == "failed" else "",
        )
        counts[outcome] += 1
    Job.objects.filter(pk=job.pk).update(**counts)
    job.refresh_from_db()
    return job


def set_status(job: Job, status: str) -> None:
    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(
        status=status, started_at=now, finished_at=now if status in Job.TERMINAL else None
    )


def listed_ids(response: Any) -> set[str]:
    """Ids of the jobs on a changelist page (from the action checkboxes)."""
    return set(re.findall(r'name="_selected_action" value="([0-9a-f-]{36})"', response.content.decode()))


def run_action(client: Client, action: str, jobs: list[Job]) -> Any:
    return client.post(
        CHANGELIST, {"action": action, "_selected_action": [str(job.pk) for job in jobs]}, follow=True
    )


def urls_of(job: Job) -> list[str]:
    return list(job.results.order_by("position").values_list("url", flat=True))


# --- changelist, filters, search ---------------------------------------------------------


def test_changelist_shows_the_history_with_progress(admin_client: Client, alice: Any) -> None:
    job = make_job(alice, ["http://a.test/1", "http://a.test/2", "http://a.test/3", "http://a.test/4"],
                   "nightly check", p0="succeeded", p1="failed", p2="succeeded")
    set_status(job, Job.Status.RUNNING)
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    body = response.content.decode()
    assert "nightly check" in body and "alice" in body
    assert "3/4 (75%)" in body
    assert listed_ids(response) == {str(job.pk)}


def test_changelist_filters_by_status_and_owner(admin_client: Client, alice: Any, bob: Any) -> None:
    queued = make_job(alice, ["http://a.test/"], "queued one")
    done = make_job(bob, ["http://a.test/"], "done one", p0="succeeded")
    set_status(done, Job.Status.COMPLETED)
    assert listed_ids(admin_client.get(CHANGELIST, {"status__exact": "completed"})) == {str(done.pk)}
    assert listed_ids(admin_client.get(CHANGELIST, {"owner__id__exact": alice.pk})) == {str(queued.pk)}
    today = timezone.now()
    by_day = {"created_at__year": today.year, "created_at__month": today.month, "created_at__day": today.day}
    assert listed_ids(admin_client.get(CHANGELIST, by_day)) == {str(queued.pk), str(done.pk)}


def test_search_by_name_id_and_url(admin_client: Client, alice: Any, bob: Any) -> None:
    first = make_job(alice, ["http://shop.test/a", "http://shop.test/b"], "Shop crawl")
    second = make_job(bob, ["http://blog.test/a", "http://shop.test/b"], "Blog crawl")
    third = make_job(bob, ["http://other.test/"], "misc")

    assert listed_ids(admin_client.get(CHANGELIST, {"q": "shop"})) == {str(first.pk)}
    assert listed_ids(admin_client.get(CHANGELIST, {"q": "crawl"})) == {str(first.pk), str(second.pk)}
    assert listed_ids(admin_client.get(CHANGELIST, {"q": str(third.pk)})) == {str(third.pk)}
    assert listed_ids(admin_client.get(CHANGELIST, {"q": "http://shop.test/b"})) == {str(first.pk), str(second.pk)}
    assert listed_ids(admin_client.get(CHANGELIST, {"q": "http://blog.test/a"})) == {str(second.pk)}
    assert listed_ids(admin_client.get(CHANGELIST, {"q": "http://nowhere.test/"})) == set()


def test_url_search_is_one_exists_subquery(admin_client: Client, alice: Any) -> None:
    for i in range(3):
        make_job(alice, [f"http://a.test/{n}" for n in range(50)], f"job {i}")
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(CHANGELIST, {"q": "http://a.test/7"})
    assert len(listed_ids(response)) == 3
    job_queries = [q["sql"] for q in queries.captured_queries if 'FROM "jobs_job"' in q["sql"]]
    assert any("EXISTS" in sql and 'FROM "jobs_result"' in sql for sql in job_queries)
    # The job rows are never joined to their results (no duplicates, no 10k-row join).
    assert not any('JOIN "jobs_result"' in sql for sql in job_queries)


# --- change page and results ------------------------------------------------------------------


def test_change_page_links_to_paginated_results(admin_client: Client, alice: Any) -> None:
    urls = [f"http://a.test/{n}" for n in range(250)]
    job = make_job(alice, urls, "big", p3="failed", p7="failed", p9="succeeded")
    other = make_job(alice, ["http://elsewhere.test/"], "other")
    page = admin_client.get(f"/admin/jobs/job/{job.pk}/change/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "http://a.test/3" in body and "connect: connection refused" in body  # failure preview
    assert "http://a.test/100" not in body  # no inline of every row
    link = re.search(r'href="(/admin/jobs/result/\?job__id__exact=[^"]+)">All \(250\)', body)
    assert link, "the change page links to the job's results"

    results = admin_client.get(link.group(1).replace("&amp;", "&"))
    assert results.status_code == 200
    rows = re.findall(r'<th class="field-position_display"', results.content.decode())
    assert len(rows) == 100  # one page, not 250
    assert "http://elsewhere.test/" not in results.content.decode()
    assert str(other.pk) not in results.content.decode()

    failed = admin_client.get(link.group(1).replace("&amp;", "&") + "&outcome__exact=failed")
    text = failed.content.decode()
    assert "http://a.test/3" in text and "http://a.test/7" in text and "http://a.test/9<" not in text


def test_worker_fields_are_read_only_and_jobs_are_not_added_here(admin_client: Client, alice: Any) -> None:
    job = make_job(alice, ["http://a.test/"], "named")
    response = admin_client.post(
        f"/admin/jobs/job/{job.pk}/change/", {"name": "renamed", "status": "completed", "succeeded": "9"}
    )
    assert response.status_code == 302
    job.refresh_from_db()
    assert (job.name, job.status, job.succeeded) == ("renamed", Job.Status.QUEUED, 0)
    assert admin_client.get("/admin/jobs/job/add/").status_code == 403


def test_saving_in_the_admin_never_overwrites_what_the_worker_wrote(rf: Any, admin_user: Any, alice: Any) -> None:
    from django.contrib.admin.sites import site

    job = make_job(alice, ["http://a.test/1", "http://a.test/2"], "old name")
    model_admin = site._registry[Job]
    request = rf.post("/")
    request.user = admin_user
    loaded = Job.objects.get(pk=job.pk)  # the admin reads the row ...
    # ... the worker records a result and finishes meanwhile ...
    Job.objects.filter(pk=job.pk).update(succeeded=2, status=Job.Status.COMPLETED)
    form = model_admin.get_form(request, loaded, change=True)({"name": "new name"}, instance=loaded)
    assert form.is_valid(), form.errors
    model_admin.save_model(request, form.save(commit=False), form, change=True)  # ... then saves the name.
    job.refresh_from_db()
    assert (job.name, job.succeeded, job.status) == ("new name", 2, Job.Status.COMPLETED)


# --- actions ------------------------------------------------------------------------------------


def test_cancel_action(admin_client: Client, alice: Any) -> None:
    queued = make_job(alice, ["http://a.test/1", "http://a.test/2"], "queued")
    running = make_job(alice, ["http://a.test/1", "http://a.test/2"], "running", p0="succeeded")
    set_status(running, Job.Status.RUNNING)
    finished = make_job(alice, ["http://a.test/1"], "finished", p0="succeeded")
    set_status(finished, Job.Status.COMPLETED)

    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(groups.user_group(alice.pk), channel)
    try:
        response = run_action(admin_client, "cancel_jobs", [queued, running, finished])
        updates = async_to_sync(drain)(layer, channel)
    finally:
        async_to_sync(layer.group_discard)(groups.user_group(alice.pk), channel)

    assert "Cancelled 1 queued job(s); asked 1 running job(s) to stop; 1 already finished." in response.content.decode()
    statuses = {job.name: Job.objects.get(pk=job.pk).status for job in (queued, running, finished)}
    assert statuses == {"queued": "cancelled", "running": "cancelling", "finished": "completed"}
    assert Job.objects.get(pk=queued.pk).cancelled == 2
    # The owner's open pages hear about both changes.
    assert {(u["job"]["id"], u["job"]["status"]) for u in updates} == {
        (str(queued.pk), "cancelled"), (str(running.pk), "cancelling")
    }


async def drain(layer: Any, channel: str, *, idle: float = 0.5) -> list[dict[str, Any]]:
    """Every message on `channel` until none arrives for `idle` seconds."""
    messages = []
    while True:
        try:
            messages.append(await asyncio.wait_for(layer.receive(channel), timeout=idle))
        except TimeoutError:
            return messages


def test_rerun_action_makes_a_new_job_with_the_same_urls_and_options(
    admin_client: Client, alice: Any, bob: Any
) -> None:
    original = make_job(alice, ["http://a.test/1", "http://a.test/2", "http://a.test/1"], "weekly",
                        p0="succeeded", p1="failed", p2="succeeded")
    set_status(original, Job.Status.COMPLETED)
    unnamed = make_job(bob, ["http://b.test/"], "")

    response = run_action(admin_client, "rerun_jobs", [original, unnamed])
    assert "Queued 2 new job(s)." in response.content.decode()
    rerun = Job.objects.exclude(pk__in=[original.pk, unnamed.pk]).get(owner=alice)
    assert (rerun.name, rerun.status, rerun.concurrency, rerun.timeout, rerun.total) == (
        "weekly (re-run)", Job.Status.QUEUED, 4, 2.5, 3
    )
    assert urls_of(rerun) == ["http://a.test/1", "http://a.test/2", "http://a.test/1"]
    assert set(rerun.results.values_list("outcome", flat=True)) == {"pending"}
    bob_rerun = Job.objects.exclude(pk=unnamed.pk).get(owner=bob)
    assert bob_rerun.name == f"job {str(unnamed.pk)[:8]} (re-run)"
    assert urls_of(bob_rerun) == ["http://b.test/"]
    original.refresh_from_db()
    assert (original.status, original.succeeded, original.failed) == (Job.Status.COMPLETED, 2, 1)


def test_rerun_failed_action_takes_only_failed_urls(admin_client: Client, alice: Any) -> None:
    urls = [f"http://a.test/{n}" for n in range(6)]
    mixed = make_job(alice, urls, "mixed", p0="succeeded", p1="failed", p2="cancelled", p4="failed", p5="succeeded")
    set_status(mixed, Job.Status.CANCELLED)
    clean = make_job(alice, ["http://a.test/ok"], "clean", p0="succeeded")
    set_status(clean, Job.Status.COMPLETED)

    response = run_action(admin_client, "rerun_failed_urls", [mixed, clean])
    text = response.content.decode()
    assert "Queued 1 new job(s). 1 job(s) had no failed URLs." in text
    new = Job.objects.exclude(pk__in=[mixed.pk, clean.pk]).get()
    assert (new.name, new.owner, new.concurrency, new.timeout) == ("mixed (re-run failed)", alice, 4, 2.5)
    assert urls_of(new) == ["http://a.test/1", "http://a.test/4"]
    assert new.total == 2 and new.status == Job.Status.QUEUED
