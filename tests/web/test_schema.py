"""/api/schema/: the OpenAPI description covers every API route and method, and real answers match it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import get_resolver
from django.utils import timezone

from jobs.models import Job, Result
from jobs.monitoring_models import Schedule
from jobs.web import tokens
from tests.web.helpers import http_patterns
from tests.web.schema_check import DOCUMENT, assert_documented, openapi_path

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("memory_layer")]

JOB = "/api/jobs/{job_id}/"


def api_paths() -> list[str]:
    return sorted(
        openapi_path(pattern) for pattern in http_patterns(get_resolver().url_patterns)
        if pattern.startswith("api/")
    )


def test_schema_is_served_publicly_and_follows_the_settings(settings: Any) -> None:
    settings.JOBS_MAX_URLS = 7
    response = Client().get("/api/schema/")
    assert response.status_code == 200
    data = response.json()
    assert data["openapi"].startswith("3.1")
    assert data["components"]["schemas"]["Submission"]["properties"]["urls"]["maxItems"] == 7


def test_every_api_route_and_method_is_described(ann_client: Client, ann: Any) -> None:
    job = Job.objects.create(owner=ann, concurrency=1, timeout=1, total=0)
    schedule = Schedule.objects.create(owner=ann, urls=["http://a.example/"], options={}, interval=60)
    described = {path: {method.upper() for method in item if method != "parameters"}
                 for path, item in DOCUMENT["paths"].items()}
    routes = [path for path in api_paths() if path != "/^api/"]  # the JSON 404 catch-all
    assert sorted(described) == routes
    for path in routes:
        # A method no route accepts (PUT): the 405's Allow header lists the ones the route does.
        concrete = path.replace("{job_id}", str(job.id)).replace("{position}", "0").replace("{schedule_id}", str(schedule.pk))
        refused = ann_client.generic("PUT", concrete)
        assert refused.status_code == 405, path
        allowed = {method.strip() for method in refused["Allow"].split(",")} - {"HEAD"}
        assert allowed == described[path], path


def test_real_answers_match_the_description(ann_client: Client, ann: Any, settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    created = ann_client.post(
        "/api/jobs/", json.dumps({"urls": ["http://a.example/"], "name": "n", "save_bodies": True}),
        content_type="application/json",
    )
    assert_documented("/api/jobs/", "POST", created)
    job_id = created.json()["id"]
    # The one row failed with a 404 whose body was kept: every new field has a real value.
    Result.objects.filter(job_id=job_id).update(
        outcome="failed", error="http_status: 404 Not Found", error_class="http_status", attempts=1, status_code=404,
        bytes=9, elapsed_ms=5, final_url="http://a.example/", content_type="text/plain", redirects=0,
        sha256=hashlib.sha256(b"not found").hexdigest(), fetched_at=timezone.now(),
        body=default_storage.save(f"bodies/{job_id}/0", ContentFile(b"not found")),
    )  # fmt: skip
    Job.objects.filter(pk=job_id).update(failed=1)
    job_path = f"/api/jobs/{job_id}/"
    results = "/api/jobs/{job_id}/results/"
    checks = [
        ("/api/jobs/", "GET", ann_client.get("/api/jobs/?limit=1")),
        ("/api/jobs/", "GET", ann_client.get("/api/jobs/?limit=0")),
        ("/api/jobs/", "POST", ann_client.post("/api/jobs/", "{", content_type="application/json")),
        ("/api/jobs/", "POST", ann_client.post("/api/jobs/", json.dumps({"urls": ["x"], "extra": 1}),
                                               content_type="application/json")),
        ("/api/jobs/", "POST", Client().post("/api/jobs/", "{}", content_type="application/json")),
        ("/api/jobs/", "GET", Client().get("/api/jobs/", headers={"Authorization": "Bearer bf_nope"})),
        ("/api/jobs/", "PUT", ann_client.put("/api/jobs/")),
        (JOB, "GET", ann_client.get(job_path)),
        (JOB, "GET", ann_client.get("/api/jobs/not-a-uuid/")),
        (results, "GET", ann_client.get(f"{job_path}results/?outcome=failed")),
        (results, "GET", ann_client.get(f"{job_path}results/?outcome=nope")),
        (results, "GET", ann_client.get(f"{job_path}results/?order=newest&status_code=404,500&q=A.EXAMPLE&limit=1")),
        (results, "GET", ann_client.get(f"{job_path}results/?order=newest&before=0")),
        (results, "GET", ann_client.get(f"{job_path}results/?order=sideways")),
        (results, "GET", ann_client.get(f"{job_path}results/?order=newest&before=7")),
        (results, "GET", ann_client.get(f"{job_path}results/?status_code=99")),
        ("/api/jobs/{job_id}/results.jsonl", "GET", ann_client.get(f"{job_path}results.jsonl")),
        ("/api/jobs/{job_id}/results.csv", "GET", ann_client.get(f"{job_path}results.csv")),
        ("/api/jobs/{job_id}/results/{position}/body", "GET", ann_client.get(f"{job_path}results/0/body")),
        ("/api/jobs/{job_id}/results/{position}/body", "GET", ann_client.get(f"{job_path}results/1/body")),
        ("/api/jobs/{job_id}/bodies.zip", "GET", ann_client.get(f"{job_path}bodies.zip")),
        ("/api/jobs/{job_id}/stats/", "GET", ann_client.get(f"{job_path}stats/")),
        ("/api/jobs/{job_id}/pause/", "POST", ann_client.post(f"{job_path}pause/")),
        ("/api/jobs/{job_id}/pause/", "POST", ann_client.post(f"{job_path}pause/")),
        ("/api/jobs/{job_id}/resume/", "POST", ann_client.post(f"{job_path}resume/")),
        ("/api/jobs/{job_id}/rerun-failed/", "POST", ann_client.post(f"{job_path}rerun-failed/")),
        ("/api/jobs/{job_id}/cancel/", "POST", ann_client.post(f"{job_path}cancel/")),
        ("/api/jobs/{job_id}/pause/", "POST", ann_client.post(f"{job_path}pause/")),
        ("/api/jobs/{job_id}/resume/", "POST", ann_client.post(f"{job_path}resume/")),
        ("/api/schema/", "GET", ann_client.get("/api/schema/")),
    ]
    rerun = checks[25][2].json()
    checks.append(("/api/jobs/{job_id}/rerun-failed/", "POST",
                   ann_client.post(f"/api/jobs/{rerun['id']}/rerun-failed/")))
    csrf = Client(enforce_csrf_checks=True)
    csrf.force_login(ann)
    checks.append(("/api/jobs/{job_id}/pause/", "POST", csrf.post(f"{job_path}pause/")))
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10
    checks.append(("/api/jobs/", "POST", ann_client.post("/api/jobs/", json.dumps({"urls": ["http://a.example/"]}),
                                                         content_type="application/json")))
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000_000
    settings.JOBS_MAX_QUEUED_PER_USER = 0
    checks.append(("/api/jobs/", "POST", ann_client.post("/api/jobs/", json.dumps({"urls": ["http://a.example/"]}),
                                                         content_type="application/json")))
    checks.append(("/api/jobs/{job_id}/rerun-failed/", "POST", ann_client.post(f"{job_path}rerun-failed/")))
    token = tokens.create_token(user=get_user_model().objects.create_user(username="bob")).secret
    checks.append((JOB, "GET", Client().get(job_path, headers={"Authorization": f"Bearer {token}"})))
    checks.append(("/api/jobs/{job_id}/stats/", "GET",
                   Client().get(f"{job_path}stats/", headers={"Authorization": f"Bearer {token}"})))

    statuses = [response.status_code for _, _, response in checks]
    assert statuses == [
        200, 400, 400, 400, 401, 401, 405, 200, 404,
        200, 400, 200, 200, 400, 400, 400, 200, 200,  # results
        200, 404, 200, 200,  # body, no body, zip, stats
        202, 202, 202, 201, 202, 409, 409,  # pause (twice), resume, rerun, cancel, pause and resume a cancelled job
        200, 409, 403, 413, 429, 429, 404, 404,
    ]
    for path, method, response in checks:
        assert_documented(path, method, response)
    # The answers carry what the checks are meant to exercise.
    newest = checks[11][2].json()["results"]
    assert [(row["position"], row["error_class"], row["status_code"]) for row in newest] == [(0, "http_status", 404)]
    stats = checks[21][2].json()
    assert stats["status_codes"] == [{"code": 404, "count": 1}] and stats["errors"] == [{"class": "http_status", "count": 1}]
    assert [check[2].json()["status"] for check in checks[22:25]] == ["paused", "paused", "queued"]
    assert (checks[18][2]["Content-Type"], checks[18][2]["X-Content-Type-Options"]) == ("application/octet-stream", "nosniff")
    assert checks[20][2]["Content-Type"] == "application/zip"
    assert rerun["save_bodies"] is True and rerun["total"] == 1


def test_an_undocumented_field_fails_the_check(ann_client: Client) -> None:
    """The check can fail: a Job with a field the description does not list is rejected."""
    created = ann_client.post("/api/jobs/", json.dumps({"urls": ["http://a.example/"]}),
                              content_type="application/json")
    created.content = json.dumps({**created.json(), "secret_field": 1}).encode()
    with pytest.raises(AssertionError, match="secret_field"):
        assert_documented("/api/jobs/", "POST", created)
