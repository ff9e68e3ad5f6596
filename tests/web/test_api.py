"""The JSON API's job endpoints (jobs/web/api.py) and the rules they share (jobs/web/api_base.py: authentication,
CSRF, methods, JSON errors), driven through Django's async test client. The exports are in test_api_exports.py."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.test import AsyncClient
from django.urls import reverse
from django.utils import timezone

from jobs.models import Job, Result
from jobs.progress import groups
from jobs.submission import validation
from tests.web.helpers import URLS, make_finished_job, make_job, post_json

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("memory_layer")]


# --- submit -------------------------------------------------------------------------------------


async def test_create_job_returns_201_job_json_and_stores_rows(ann_async_client: AsyncClient, ann: Any) -> None:
    response = await post_json(ann_async_client, "/api/jobs/",
                               {"urls": URLS, "name": "nightly", "concurrency": 4, "timeout": 2})

    assert response.status_code == 201
    data = response.json()
    job = await Job.objects.aget(pk=data["id"])
    assert response["Location"] == f"/api/jobs/{job.id}/"
    assert job.owner_id == ann.pk
    for key, value in {"name": "nightly", "status": "queued", "total": 3, "succeeded": 0, "failed": 0,
                       "concurrency": 4, "timeout": 2.0, "started_at": None, "finished_at": None}.items():
        assert data[key] == value, key
    assert data["created_at"]
    rows = [(r.position, r.url, r.outcome) async for r in Result.objects.filter(job=job).order_by("position")]
    assert rows == [(0, URLS[0], "pending"), (1, URLS[1], "pending"), (2, URLS[2], "pending")]


async def test_create_job_wakes_the_workers_and_updates_the_list(ann_async_client: AsyncClient, ann: Any) -> None:
    layer = get_channel_layer()
    listener = await layer.new_channel()
    await layer.group_add(groups.WAKEUP_GROUP, listener)
    await layer.group_add(groups.user_group(ann.pk), listener)

    response = await post_json(ann_async_client, "/api/jobs/", {"urls": URLS})

    assert response.status_code == 201
    messages = [await asyncio.wait_for(layer.receive(listener), 2) for _ in range(2)]
    assert sorted(message["type"] for message in messages) == ["job.update", "worker.wakeup"]


async def test_bad_input_is_400_naming_each_bad_item_and_nothing_is_created(ann_async_client: AsyncClient) -> None:
    body = {"urls": ["http://ok.example/", "ftp://x.example/", "not a url"], "concurrency": 0, "timeout": -1, "x": 1}
    response = await post_json(ann_async_client, "/api/jobs/", body)

    assert response.status_code == 400
    assert response.json() == {
        "errors": {
            "x": f"unknown field (expected {', '.join(validation.FIELDS)})",
            "urls": [
                {"index": 1, "value": "ftp://x.example/", "error": "scheme must be http or https, not 'ftp'"},
                {"index": 2, "value": "not a url", "error": "contains whitespace"},
            ],
            "concurrency": "must be an integer from 1 to 1000",
            "timeout": "must be a number of seconds greater than 0 and at most 300",
        }
    }
    assert await Job.objects.acount() == 0
    assert await Result.objects.acount() == 0


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('{"urls": [\n  "http://a.example/",\n]}', "malformed JSON: Expecting value at line 3 column 1"),
        ("", "malformed JSON: Expecting value at line 1 column 1"),
        ('{"urls": ["http://a.example/"]', "malformed JSON: Expecting ',' delimiter at line 1 column 31"),
        ("[" * 100_000, "malformed JSON: nested too deeply"),
    ],
)
async def test_malformed_json_names_line_and_column(ann_async_client: AsyncClient, body: str, error: str) -> None:
    response = await post_json(ann_async_client, "/api/jobs/", body)
    assert response.status_code == 400
    assert response.json() == {"errors": {"body": error}}
    assert await Job.objects.acount() == 0


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"urls": []}, {"urls": [{"error": "must not be empty"}]}),
        ({"name": "x"}, {"urls": [{"error": "required: a non-empty list of URLs"}]}),
        (["http://a.example/"], {"body": "must be a JSON object with a 'urls' list, not a list"}),
        ({"urls": URLS * 2}, {"urls": [{"error": "too many URLs: 6 (at most 5)"}]}),
    ],
)
async def test_bad_url_lists(ann_async_client: AsyncClient, settings: Any, body: Any, errors: dict[str, Any]) -> None:
    settings.JOBS_MAX_URLS = 5
    response = await post_json(ann_async_client, "/api/jobs/", body)
    assert (response.status_code, response.json()) == (400, {"errors": errors})
    assert await Job.objects.acount() == 0


async def test_body_over_the_upload_limit_is_413(ann_async_client: AsyncClient, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    response = await post_json(ann_async_client, "/api/jobs/", {"urls": ["http://example.com/" + "x" * 200]})
    assert response.status_code == 413
    assert response.json() == {"errors": {"body": "request body larger than 100 bytes"}}


# --- auth, CSRF, ownership, methods ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/jobs/"),
        ("post", "/api/jobs/"),
        ("get", "/api/jobs/{id}/"),
        ("post", "/api/jobs/{id}/cancel/"),
        ("get", "/api/jobs/{id}/results/"),
        ("get", "/api/jobs/{id}/results.csv"),
        ("get", "/api/jobs/{id}/results.jsonl"),
    ],
)
async def test_anonymous_gets_401_json_not_a_redirect(ann: Any, method: str, path: str) -> None:
    job = await make_job(ann)
    response = await getattr(AsyncClient(), method)(path.format(id=job.id))
    assert response.status_code == 401
    assert response.json() == {"error": "authentication required"}
    assert (await Job.objects.aget(pk=job.pk)).status == "queued"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/jobs/{id}/"),
        ("post", "/api/jobs/{id}/cancel/"),
        ("get", "/api/jobs/{id}/results/"),
        ("get", "/api/jobs/{id}/results.csv"),
        ("get", "/api/jobs/{id}/results.jsonl"),
    ],
)
async def test_another_users_job_is_404(ann_async_client: AsyncClient, bob: Any, method: str, path: str) -> None:
    job = await make_job(bob)
    response = await getattr(ann_async_client, method)(path.format(id=job.id))
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}
    assert (await Job.objects.aget(pk=job.pk)).status == "queued"


@pytest.mark.parametrize("path", [f"/api/jobs/{uuid.uuid4()}/", "/api/jobs/not-a-uuid/", "/api/jobs/x/results.csv",
                                  "/api/nothing/here"])
async def test_unknown_ids_and_paths_are_json_404(ann_async_client: AsyncClient, path: str) -> None:
    response = await ann_async_client.get(path)
    assert (response.status_code, response.json()) == (404, {"error": "not found"})


async def test_wrong_method_is_405_json(ann_async_client: AsyncClient, ann: Any) -> None:
    job = await make_job(ann)
    for method, path, allow in [
        ("put", "/api/jobs/", "GET, POST"),
        ("patch", f"/api/jobs/{job.id}/", "DELETE, GET"),
        ("get", f"/api/jobs/{job.id}/cancel/", "POST"),
    ]:
        response = await getattr(ann_async_client, method)(path)
        assert response.status_code == 405, path
        assert response.json() == {"error": f"method {method.upper()} not allowed"}
        assert response["Allow"] == allow


async def test_csrf_is_enforced_and_x_csrftoken_passes(ann: Any, settings: Any) -> None:
    settings.CSRF_FAILURE_VIEW = "jobs.web.api_base.csrf_failure"
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(ann)

    refused = await post_json(client, "/api/jobs/", {"urls": URLS})
    assert refused.status_code == 403
    assert refused.json()["error"].startswith("CSRF check failed")
    assert await Job.objects.acount() == 0

    # Any API GET hands out the token cookie; a script echoes it in the header.
    listing = await client.get("/api/jobs/")
    token = listing.cookies["csrftoken"].value
    accepted = await post_json(client, "/api/jobs/", {"urls": URLS}, headers={"X-CSRFToken": token})
    assert accepted.status_code == 201
    assert await Job.objects.acount() == 1


# --- list and detail -------------------------------------------------------------------------------------


async def test_list_is_own_jobs_newest_first_with_pages(ann_async_client: AsyncClient, ann: Any, bob: Any) -> None:
    now = timezone.now()
    mine = [await make_job(ann, name=f"job{i}", created_at=now - timedelta(minutes=10 - i)) for i in range(5)]
    await make_job(bob, name="not mine")

    response = await ann_async_client.get("/api/jobs/")
    assert response.status_code == 200
    assert [job["name"] for job in response.json()["jobs"]] == ["job4", "job3", "job2", "job1", "job0"]
    assert response.json()["next"] is None

    first = (await ann_async_client.get("/api/jobs/?limit=2")).json()
    assert [job["id"] for job in first["jobs"]] == [str(mine[4].id), str(mine[3].id)]
    second = (await ann_async_client.get(first["next"])).json()
    assert [job["name"] for job in second["jobs"]] == ["job2", "job1"]
    third = (await ann_async_client.get(second["next"])).json()
    assert ([job["name"] for job in third["jobs"]], third["next"]) == (["job0"], None)


async def test_list_parameters_are_checked(ann_async_client: AsyncClient, bob: Any) -> None:
    foreign = await make_job(bob)
    for query, errors in [
        ("limit=0", {"limit": "must be an integer from 1 to 500"}),
        ("limit=lots", {"limit": "must be an integer from 1 to 500"}),
        (f"before={foreign.id}", {"before": "not one of your jobs"}),
    ]:
        response = await ann_async_client.get(f"/api/jobs/?{query}")
        assert (response.status_code, response.json()) == (400, {"errors": errors}), query


async def test_detail(ann_async_client: AsyncClient, ann: Any) -> None:
    job = await make_job(ann, name="one")
    response = await ann_async_client.get(reverse("api_job", args=[job.id]))
    assert response.status_code == 200
    assert {key: response.json()[key] for key in ("id", "name", "status", "total")} == {
        "id": str(job.id), "name": "one", "status": "queued", "total": 3,
    }


# --- cancel ----------------------------------------------------------------------------------------------


async def test_cancel_queued_job_is_202_and_cancelled(ann_async_client: AsyncClient, ann: Any) -> None:
    job = await make_job(ann)
    layer = get_channel_layer()
    listener = await layer.new_channel()
    await layer.group_add(groups.user_group(ann.pk), listener)

    response = await ann_async_client.post(f"/api/jobs/{job.id}/cancel/")

    assert response.status_code == 202
    assert (response.json()["status"], response.json()["cancelled"]) == ("cancelled", 3)
    await job.arefresh_from_db()
    assert (job.status, job.cancelled) == ("cancelled", 3)
    assert [r.outcome async for r in Result.objects.filter(job=job)] == ["cancelled"] * 3
    message = await asyncio.wait_for(layer.receive(listener), 2)
    assert (message["type"], message["job"]["status"]) == ("job.update", "cancelled")


async def test_cancel_running_job_is_202_and_cancelling(ann_async_client: AsyncClient, ann: Any) -> None:
    job = await make_job(ann, status="running", started_at=timezone.now())
    response = await ann_async_client.post(f"/api/jobs/{job.id}/cancel/")
    assert (response.status_code, response.json()["status"]) == (202, "cancelling")
    await job.arefresh_from_db()
    assert job.status == "cancelling"


async def test_cancel_finished_job_leaves_it_alone(ann_async_client: AsyncClient, ann: Any) -> None:
    job = await make_job(ann, status="completed", finished_at=timezone.now())
    response = await ann_async_client.post(f"/api/jobs/{job.id}/cancel/")
    assert (response.status_code, response.json()["status"]) == (202, "completed")


# --- results -----------------------------------------------------------------------------------------------


async def test_results_page_with_after_limit_and_outcome(ann_async_client: AsyncClient, ann: Any) -> None:
    job = await make_finished_job(ann, 10)
    base = f"/api/jobs/{job.id}/results/"

    first = (await ann_async_client.get(f"{base}?limit=4")).json()
    assert [row["position"] for row in first["results"]] == [0, 1, 2, 3]
    second = (await ann_async_client.get(first["next"])).json()
    assert [row["position"] for row in second["results"]] == [4, 5, 6, 7]
    assert [row["position"] for row in (await ann_async_client.get(second["next"])).json()["results"]] == [8, 9]

    failed = (await ann_async_client.get(f"{base}?outcome=failed&after=2")).json()
    assert ([row["position"] for row in failed["results"]], failed["next"]) == ([3, 5, 7, 9], None)
    assert {row["outcome"] for row in failed["results"]} == {"failed"}

    bad = await ann_async_client.get(f"{base}?outcome=weird,failed&after=x")
    assert bad.status_code == 400
    assert set(bad.json()["errors"]) == {"after"}
    bad = await ann_async_client.get(f"{base}?outcome=weird,failed")
    expected = "unknown outcome weird (expected pending, succeeded, failed, cancelled)"
    assert bad.json() == {"errors": {"outcome": expected}}


# --- fetch options ------------------------------------------------------------------------------


async def test_fetch_options_are_stored_and_shown_in_the_job_json(ann_async_client: AsyncClient) -> None:
    options = {"per_host": 3, "host_delay": 0.25, "retries": 0, "max_redirects": 4, "max_bytes": 1000,
               "respect_robots": True, "save_bodies": True}  # fmt: skip
    response = await post_json(ann_async_client, "/api/jobs/", {"urls": URLS, **options})

    assert response.status_code == 201
    assert {key: response.json()[key] for key in options} == options
    job = await Job.objects.aget(pk=response.json()["id"])
    assert {key: getattr(job, key) for key in options} == options
    detail = (await ann_async_client.get(f"/api/jobs/{job.id}/")).json()
    assert {key: detail[key] for key in options} == options


async def test_bad_fetch_options_are_400_naming_each(ann_async_client: AsyncClient) -> None:
    body = {"urls": URLS, "per_host": 0, "host_delay": -1, "retries": 11, "max_redirects": "x", "max_bytes": 1.5,
            "respect_robots": "maybe", "save_bodies": 3}  # fmt: skip
    response = await post_json(ann_async_client, "/api/jobs/", body)

    assert response.status_code == 400
    assert response.json()["errors"] == {
        "per_host": "must be an integer from 1 to 1000",
        "host_delay": "must be a number of seconds from 0 to 60",
        "retries": "must be an integer from 0 to 10",
        "max_redirects": "must be an integer from 0 to 30",
        "max_bytes": "must be an integer from 1 to 1073741824",
        "respect_robots": "must be true or false, not a string",
        "save_bodies": "must be true or false, not a number",
    }
    assert await Job.objects.acount() == 0


async def test_urls_are_normalised_and_duplicates_reported(ann_async_client: AsyncClient) -> None:
    urls = [" HTTP://Bücher.Example ", "http://xn--bcher-kva.example/", "http://b.example/x#top"]
    response = await post_json(ann_async_client, "/api/jobs/", {"urls": urls})

    assert response.status_code == 201 and response.json()["duplicate_urls"] == 1
    job = await Job.objects.aget(pk=response.json()["id"])
    stored = [url async for url in Result.objects.filter(job=job).order_by("position").values_list("url", flat=True)]
    assert stored == ["http://xn--bcher-kva.example/", "http://xn--bcher-kva.example/", "http://b.example/x"]
