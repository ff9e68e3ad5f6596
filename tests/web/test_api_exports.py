"""The result exports (jobs/web/api_exports.py): every row as CSV or JSON Lines, streamed page by page."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from django.test import AsyncClient

from jobs.web import api_exports
from tests.web.helpers import URLS, make_finished_job, make_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("memory_layer")]


async def streamed(response: Any) -> list[bytes]:
    assert response.streaming
    return [chunk async for chunk in response.streaming_content]


async def test_csv_export_streams_every_row_in_submission_order(ann_async_client: AsyncClient, ann: Any) -> None:
    count = api_exports.EXPORT_PAGE_SIZE * 2 + 500
    job = await make_finished_job(ann, count, name="Nightly check")

    response = await ann_async_client.get(f"/api/jobs/{job.id}/results.csv")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="nightly-check-{job.id.hex[:8]}-results.csv"'
    chunks = await streamed(response)
    assert len(chunks) == 4  # the header, then one chunk per database page
    rows = list(csv.reader(io.StringIO(b"".join(chunks).decode())))
    assert rows[0] == ["position", "url", "outcome", "status_code", "bytes", "elapsed_ms", "attempts", "error",
                       "error_class", "final_url", "content_type", "sha256", "redirects", "fetched_at",
                       "method", "request_headers", "request_body_sha256"]
    assert [int(row[0]) for row in rows[1:]] == list(range(count))
    assert rows[1][-3:] == ["GET", "{}", ""]  # a plain job's request
    assert rows[1][:8] == ["0", "http://h0.example/0", "succeeded", "200", "0", "0", "1", ""]
    assert rows[2][:8] == ["1", "http://h1.example/1", "failed", "", "0", "3", "1", 'connect: refused, "quoted"\nline']


async def test_jsonl_export_streams_every_row_in_submission_order(ann_async_client: AsyncClient, ann: Any) -> None:
    count = api_exports.EXPORT_PAGE_SIZE + 1
    job = await make_finished_job(ann, count)

    response = await ann_async_client.get(f"/api/jobs/{job.id}/results.jsonl")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="job-{job.id.hex[:8]}-results.jsonl"'
    chunks = await streamed(response)
    assert len(chunks) == 2
    lines = b"".join(chunks).decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert [record["position"] for record in records] == list(range(count))
    assert {key: records[1][key] for key in ("url", "outcome", "status_code", "bytes", "elapsed_ms", "attempts",
                                              "error")} == {
        "url": "http://h1.example/1", "outcome": "failed", "status_code": None, "bytes": 0, "elapsed_ms": 3,
        "attempts": 1, "error": 'connect: refused, "quoted"\nline',
    }


async def test_export_of_pending_job_lists_pending_rows(ann_async_client: AsyncClient, ann: Any) -> None:
    job = await make_job(ann)
    body = b"".join(await streamed(await ann_async_client.get(f"/api/jobs/{job.id}/results.csv"))).decode()
    rows = list(csv.reader(io.StringIO(body)))
    assert [(row[1], row[2]) for row in rows[1:]] == [(url, "pending") for url in URLS]
