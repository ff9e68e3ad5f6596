"""What changed since the previous run: the SQL comparison, the changes API and CSV, the job page's panel."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.test import AsyncClient, Client

from jobs.models import Job
from jobs.monitoring import changes, links, settle
from jobs.monitoring_models import Change, JobMonitor
from tests.monitoring.helpers import finished_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("memory_layer")]

A, B, C, D, E, F = (f"http://{name}.example/" for name in "abcdef")
BEFORE = [(A, "succeeded", 200, "1" * 64), (B, "failed", 500, ""), (C, "succeeded", 200, "2" * 64),
          (D, "succeeded", 200, "3" * 64), (E, "failed", None, ""), (F, "succeeded", 301, "")]  # fmt: skip
AFTER = [(A, "failed", 500, ""), (B, "succeeded", 200, "4" * 64), (C, "succeeded", 404, "2" * 64),
         (D, "succeeded", 200, "5" * 64), (E, "failed", None, ""), (F, "succeeded", 301, "")]  # fmt: skip
EXPECTED = {A: "new_failure", B: "recovered", C: "status_changed", D: "content_changed", E: "unchanged",
            F: "unchanged"}  # fmt: skip


def second_run(owner: Any, before: list = BEFORE, after: list = AFTER) -> tuple[Job, Job]:
    first = finished_job(owner, before)
    second = finished_job(owner, after)
    JobMonitor.objects.create(job=second, previous=first)
    settle.settle_finished()
    return first, second


def test_each_url_gets_the_first_kind_that_fits(ann: Any) -> None:
    _, second = second_run(ann)
    kinds = dict(Change.objects.filter(job=second).values_list("url", "kind"))
    assert kinds == EXPECTED
    assert JobMonitor.objects.get(job=second).change_counts == {
        "new_failure": 1, "recovered": 1, "status_changed": 1, "content_changed": 1, "unchanged": 2,
    }  # fmt: skip


def test_a_url_that_failed_then_changed_code_is_a_status_change_only() -> None:
    """500 -> 503 is no new failure (it failed before) but a status change, counted once."""
    assert changes.KINDS.index("status_changed") > changes.KINDS.index("recovered")


def test_the_comparison_is_one_query_per_batch(ann: Any, django_assert_max_num_queries: Any, monkeypatch: Any) -> None:
    first = finished_job(ann, BEFORE * 4)
    second = finished_job(ann, AFTER * 4)
    monkeypatch.setattr(changes, "CHANGES_BATCH", 10)
    # delete, ceil(24 / 10) inserts, counts, BEGIN and COMMIT (+ PostgreSQL's SET LOCAL enable_nestloop and back)
    hash_joins = 2 if connection.vendor == "postgresql" else 0
    with django_assert_max_num_queries(1 + 3 + 1 + 2 + hash_joins):
        counts = changes.compare(second, first)
    assert sum(counts.values()) == 24
    # A URL listed four times is compared with its first occurrence before.
    assert counts["new_failure"] == 4 and counts["unchanged"] == 8


def test_the_api_pages_and_filters_by_kind(ann_client: Client, ann: Any) -> None:
    _, second = second_run(ann)
    data = ann_client.get(f"/api/jobs/{second.pk}/changes/?limit=4").json()
    assert data["previous"] is not None
    assert data["counts"]["unchanged"] == 2
    assert [row["kind"] for row in data["changes"]] == ["new_failure", "recovered", "status_changed", "content_changed"]
    rest = ann_client.get(data["next"]).json()
    assert [row["url"] for row in rest["changes"]] == [E, F] and rest["next"] is None
    failures = ann_client.get(f"/api/jobs/{second.pk}/changes/?kind=new_failure,status_changed").json()
    assert [(row["url"], row["old_status"], row["new_status"]) for row in failures["changes"]] == [
        (A, 200, 500), (C, 200, 404),
    ]  # fmt: skip
    bad = ann_client.get(f"/api/jobs/{second.pk}/changes/?kind=moved")
    assert bad.status_code == 400 and "kind" in bad.json()["errors"]


def test_a_first_run_has_no_previous(ann_client: Client, ann: Any) -> None:
    job = finished_job(ann, BEFORE)
    assert ann_client.get(f"/api/jobs/{job.pk}/changes/").json() == {
        "previous": None, "counts": {}, "changes": [], "next": None,
    }  # fmt: skip


def test_changes_are_owner_only(ann_client: Client, ann: Any, bob: Any) -> None:
    _, second = second_run(ann)
    other = Client()
    other.force_login(bob)
    assert other.get(f"/api/jobs/{second.pk}/changes/").status_code == 404
    assert other.get(f"/api/jobs/{second.pk}/changes.csv").status_code == 404


async def test_csv_export(ann: Any) -> None:
    _, second = await sync_to_async(second_run)(ann)
    client = AsyncClient()
    await client.aforce_login(ann)
    response = await client.get(f"/api/jobs/{second.pk}/changes.csv?kind=new_failure,content_changed")
    assert response["Content-Type"].startswith("text/csv")
    body = b"".join([chunk async for chunk in response.streaming_content])
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    await sync_to_async(connections.close_all)()  # the async ORM's thread connection (see test_pause.py)
    assert [(row["url"], row["kind"]) for row in rows] == [(A, "new_failure"), (D, "content_changed")]


def test_the_job_page_panel_shows_the_api_counts(ann_client: Client, ann: Any) -> None:
    _, second = second_run(ann)
    page = ann_client.get(f"/jobs/{second.pk}/").content.decode()
    assert "Changes since the previous run" in page
    api = ann_client.get(f"/api/jobs/{second.pk}/changes/").json()["counts"]
    for kind, n in api.items():
        assert f'data-kind="{kind}">{n}</dd>' in page
    assert page.count('<tr data-kind="') == 4  # the changed rows, not the unchanged ones


def test_a_rerun_compares_with_the_job_it_reruns(ann_client: Client, ann: Any) -> None:
    first = finished_job(ann, BEFORE)
    response = ann_client.post(f"/api/jobs/{first.pk}/rerun-failed/")
    assert response.status_code == 201
    rerun = Job.objects.get(pk=response.json()["id"])
    assert JobMonitor.objects.get(job=rerun).previous == first
    again = links.rerun(first, failed_only=False)
    assert again is not None and JobMonitor.objects.get(job=again).previous == first
