"""/api/schema/: the OpenAPI description covers every API route and method, and real answers match it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import get_resolver

from jobs import tokens
from jobs.models import Job, Result
from tests.schema_check import DOCUMENT, assert_documented, openapi_path
from tests.test_authorization import http_patterns

pytestmark = pytest.mark.django_db(transaction=True)

MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
JOB = "/api/jobs/{job_id}/"


@pytest.fixture(autouse=True)
def memory_layer(settings: Any) -> None:
    settings.CHANNEL_LAYERS = MEMORY_LAYER


@pytest.fixture
def ann() -> Any:
    return get_user_model().objects.create_user(username="ann")


@pytest.fixture
def client(ann: Any) -> Client:
    client = Client()
    client.force_login(ann)
    return client


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


def test_every_api_route_and_method_is_described(client: Client, ann: Any) -> None:
    job = Job.objects.create(owner=ann, concurrency=1, timeout=1, total=0)
    described = {path: {method.upper() for method in item if method != "parameters"}
                 for path, item in DOCUMENT["paths"].items()}
    routes = [path for path in api_paths() if path != "/^api/"]  # the JSON 404 catch-all
    assert sorted(described) == routes
    for path in routes:
        # A method no route accepts: the 405's Allow header lists the ones the route does.
        refused = client.generic("DELETE", path.replace("{job_id}", str(job.id)))
        assert refused.status_code == 405, path
        allowed = {method.strip() for method in refused["Allow"].split(",")} - {"HEAD"}
        assert allowed == described[path], path


def test_real_answers_match_the_description(client: Client, ann: Any, settings: Any) -> None:
    created = client.post("/api/jobs/", json.dumps({"urls": ["http://a.example/"], "name": "n"}),
                          content_type="application/json")
    assert_documented("/api/jobs/", "POST", created)
    job_id = created.json()["id"]
    Result.objects.filter(job_id=job_id).update(outcome="failed", error="boom", attempts=1)
    job_path = f"/api/jobs/{job_id}/"
    checks = [
        ("/api/jobs/", "GET", client.get("/api/jobs/?limit=1")),
        ("/api/jobs/", "GET", client.get("/api/jobs/?limit=0")),
        ("/api/jobs/", "POST", client.post("/api/jobs/", "{", content_type="application/json")),
        ("/api/jobs/", "POST", client.post("/api/jobs/", json.dumps({"urls": ["x"], "extra": 1}),
                                           content_type="application/json")),
        ("/api/jobs/", "POST", Client().post("/api/jobs/", "{}", content_type="application/json")),
        ("/api/jobs/", "GET", Client().get("/api/jobs/", headers={"Authorization": "Bearer bf_nope"})),
        ("/api/jobs/", "PUT", client.put("/api/jobs/")),
        (JOB, "GET", client.get(job_path)),
        (JOB, "GET", client.get("/api/jobs/not-a-uuid/")),
        ("/api/jobs/{job_id}/results/", "GET", client.get(f"{job_path}results/?outcome=failed")),
        ("/api/jobs/{job_id}/results/", "GET", client.get(f"{job_path}results/?outcome=nope")),
        ("/api/jobs/{job_id}/results.jsonl", "GET", client.get(f"{job_path}results.jsonl")),
        ("/api/jobs/{job_id}/results.csv", "GET", client.get(f"{job_path}results.csv")),
        ("/api/jobs/{job_id}/cancel/", "POST", client.post(f"{job_path}cancel/")),
        ("/api/schema/", "GET", client.get("/api/schema/")),
    ]
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10
    checks.append(("/api/jobs/", "POST", client.post("/api/jobs/", json.dumps({"urls": ["http://a.example/"]}),
                                                     content_type="application/json")))
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000_000
    settings.JOBS_MAX_QUEUED_PER_USER = 0
    checks.append(("/api/jobs/", "POST", client.post("/api/jobs/", json.dumps({"urls": ["http://a.example/"]}),
                                                     content_type="application/json")))
    token = tokens.create_token(user=get_user_model().objects.create_user(username="bob")).secret
    checks.append((JOB, "GET", Client().get(job_path, headers={"Authorization": f"Bearer {token}"})))

    statuses = [response.status_code for _, _, response in checks]
    assert statuses == [200, 400, 400, 400, 401, 401, 405, 200, 404, 200, 400, 200, 200, 202, 200, 413, 429, 404]
    for path, method, response in checks:
        assert_documented(path, method, response)


def test_an_undocumented_field_fails_the_check(client: Client) -> None:
    """The check can fail: a Job with a field the description does not list is rejected."""
    created = client.post("/api/jobs/", json.dumps({"urls": ["http://a.example/"]}), content_type="application/json")
    created.content = json.dumps({**created.json(), "secret_field": 1}).encode()
    with pytest.raises(AssertionError, match="secret_field"):
        assert_documented("/api/jobs/", "POST", created)
