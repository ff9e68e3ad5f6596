"""Submitting requests over the JSON API: what is stored, what is shown, one 400 naming every bad line."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, override_settings

from jobs.models import Job, RequestLine, Result
from jobs.submission import service
from tests.web.helpers import post_json

# As in the API tests: the in-memory channel layer, and ann's logged-in client (ann_async_client).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("memory_layer")]

TOKEN = "Bearer api-s3cr3t-value"


@override_settings(JOBS_MAX_REQUEST_BODY_BYTES=1000)
async def test_bad_lines_get_one_400_naming_line_and_field(ann_async_client: AsyncClient) -> None:
    lines = [json.dumps({"url": f"http://x.example/{i}", "json": {"i": i}}) for i in range(12)]
    lines[6] = json.dumps({"url": "http://x/", "method": "FETCH"})  # line 7
    lines[1] = json.dumps({"url": "http://x.example/", "headers": {"X-Note": "a\r\nInjected: yes"}})
    lines[2] = json.dumps({"url": "http://x.example/", "json": {"a": 1}, "body": "b"})
    lines[3] = "{this is not json"
    lines[9] = json.dumps({"url": "http://x.example/", "body": "z" * 1001})
    response = await post_json(ann_async_client, "/api/jobs/", {"requests": "\n".join(lines), "method": "POST"})
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert list(errors) == ["requests"]
    found = {(item["line"], item["index"], item["field"]) for item in errors["requests"]}
    assert found == {(7, 6, "method"), (2, 1, "headers"), (3, 2, "json"), (4, 3, "line"), (10, 9, "body")}
    assert "FETCH" in next(e["error"] for e in errors["requests"] if e["field"] == "method")
    assert await Job.objects.acount() == 0


async def test_a_job_of_requests_is_stored_with_its_secrets_sealed_and_shown_masked(
    ann_async_client: AsyncClient, ann: Any
) -> None:
    requests = [{"url": "http://a.example/1", "json": {"n": 1}}, "http://a.example/2",
                {"url": "http://a.example/3", "method": "put", "headers": {"X-Token": "line-secret-1"}}]  # fmt: skip
    response = await post_json(ann_async_client, "/api/jobs/", {
        "requests": requests, "method": "POST", "headers": {"Authorization": TOKEN, "Accept": "application/json"},
        "secret_headers": ["X-Token"], "retry_unsafe": True,
    })  # fmt: skip
    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["request"] == {"method": "POST", "headers": {"Authorization": "•••", "Accept": "application/json"},
                               "body_bytes": None, "body_sha256": ""}  # fmt: skip
    assert data["retry_unsafe"] is True and data["line_requests"] is True and data["total"] == 3
    job = await Job.objects.aget(pk=data["id"])
    assert TOKEN not in json.dumps(job.request_headers) and TOKEN not in job.sealed_headers
    lines = [line async for line in RequestLine.objects.filter(job=job).order_by("position")]
    assert [line.position for line in lines] == [0, 2]  # the plain line has no row
    assert lines[0].body == '{"n":1}' and lines[1].method == "PUT"
    assert lines[1].headers == [["X-Token", None]] and "line-secret-1" not in lines[1].sealed_headers

    exported = [json.loads(line) for line in b"".join(
        [chunk async for chunk in (await ann_async_client.get(f"/api/jobs/{job.pk}/results.jsonl")).streaming_content]
    ).decode().splitlines()]  # fmt: skip
    assert [row["request"]["method"] for row in exported] == ["POST", "POST", "PUT"]
    assert exported[2]["request"]["headers"] == {"Authorization": "•••", "Accept": "application/json", "X-Token": "•••"}
    assert exported[0]["request"]["body_sha256"] and exported[0]["request"]["headers"]["Content-Type"] == (
        "application/json")  # fmt: skip

    # The row's detail (the live page's panel) tells the request each row sent, secrets masked.
    details = [(await ann_async_client.get(f"/api/jobs/{job.pk}/results/{position}/")).json() for position in (1, 2)]
    assert [detail["request"]["method"] for detail in details] == ["POST", "PUT"]
    assert (details[1]["request"]["headers"]["X-Token"], details[1]["request"]["headers"]["Authorization"]) == (
        "•••", "•••")  # fmt: skip
    assert details[0]["request"]["headers"]["User-Agent"].startswith("batchfetch/")
    assert TOKEN not in json.dumps(details) and "line-secret-1" not in json.dumps(details)


async def test_a_rerun_sends_the_same_requests(ann_async_client: AsyncClient, ann: Any) -> None:
    response = await post_json(ann_async_client, "/api/jobs/", {
        "requests": [{"url": "http://a.example/1"}, {"url": "http://a.example/2", "body": "two"}],
        "method": "PATCH", "headers": {"X-Api-Key": "k-123456"},
    })  # fmt: skip
    job = await Job.objects.aget(pk=response.json()["id"])
    await Result.objects.filter(job=job).aupdate(outcome=Result.Outcome.FAILED)
    again = await _rerun(job)
    assert (again.method, again.request_headers, again.sealed_headers) == ("PATCH", job.request_headers,
                                                                         job.sealed_headers)  # fmt: skip
    [line] = [line async for line in RequestLine.objects.filter(job=again)]
    assert (line.position, line.body) == (1, "two")


async def _rerun(job: Job) -> Job:
    rerun = await sync_to_async(service.rerun)(job, failed_only=True, check_limits=False)
    assert rerun is not None
    return rerun
