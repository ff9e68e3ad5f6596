"""Result exports: all of a job's rows as JSON Lines or CSV, each with the request it sent.

Streamed from the database in keyset pages on `position`, so a 100k-URL job is
never loaded at once; never cached, as rows change while the job runs.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils.text import slugify

from jobs import requestdata, serializers
from jobs.models import Job, Result
from jobs.queue import requestlines
from jobs.web.api import result_page
from jobs.web.api_base import api_view, get_job

# Rows per database round trip while streaming an export.
EXPORT_PAGE_SIZE = 1000
EXPORT_COLUMNS = (*serializers.RESULT_FIELDS, "fetched_at", "method", "request_headers", "request_body_sha256")
"""The CSV's columns: the row, then the request it sent (secret header values as •••, the body's SHA-256)."""


@api_view("GET")
async def job_results_jsonl(request: HttpRequest, user: AbstractBaseUser, job_id: str) -> HttpResponse:
    """All rows as JSON Lines, streamed in submission order."""
    owned = await get_job(user, job_id)
    return _download(_jsonl_chunks(owned), owned, "jsonl", "application/x-ndjson; charset=utf-8")


@api_view("GET")
async def job_results_csv(request: HttpRequest, user: AbstractBaseUser, job_id: str) -> HttpResponse:
    """All rows as CSV with a header row, streamed in submission order."""
    owned = await get_job(user, job_id)
    return _download(_csv_chunks(owned), owned, "csv", "text/csv; charset=utf-8")


def _download(chunks: AsyncIterator[bytes], job: Job, extension: str, content_type: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(chunks, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{export_filename(job, extension)}"'
    # Rows change while the job runs; never serve a cached export.
    response["Cache-Control"] = "no-store"
    return response


def export_filename(job: Job, extension: str) -> str:
    """e.g. `nightly-check-3f2a9c1e-results.csv`: readable, unique, ASCII-only (safe in a header)."""
    stem = slugify(job.name)[:60].strip("-") or "job"
    return f"{stem}-{job.id.hex[:8]}-results.{extension}"


async def _result_pages(job_id: uuid.UUID) -> AsyncIterator[list[Result]]:
    """Every row of the job in position order, one keyset page per query."""
    after = -1
    while True:
        page = await sync_to_async(result_page)(job_id, after, EXPORT_PAGE_SIZE, None)
        if page:
            yield page
        if len(page) < EXPORT_PAGE_SIZE:
            return
        after = page[-1].position


async def _exported_rows(job: Job) -> AsyncIterator[list[dict[str, Any]]]:
    """Pages of rows as dicts, each with the `request` it sent (`requestdata.request_summary`)."""
    default = requestdata.line_summary(job, None)
    async for page in _result_pages(job.id):
        lines = {}
        if job.line_requests:  # only such jobs have RequestLine rows to read
            lines = await sync_to_async(requestlines.lines_between)(job.id, page[0].position, page[-1].position)
        rows = []
        for row in page:
            data = serializers.result_to_dict(row)
            line = lines.get(row.position)
            data["request"] = default if line is None else requestdata.line_summary(job, line)
            rows.append(data)
        yield rows


async def _jsonl_chunks(job: Job) -> AsyncIterator[bytes]:
    async for page in _exported_rows(job):
        lines = (json.dumps(data, ensure_ascii=False) for data in page)
        yield ("\n".join(lines) + "\n").encode()


async def _csv_chunks(job: Job) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    yield _drain(buffer)
    async for page in _exported_rows(job):
        for data in page:
            request = data.pop("request")
            data.update(method=request["method"], request_headers=json.dumps(request["headers"], ensure_ascii=False),
                        request_body_sha256=request["body_sha256"])  # fmt: skip
            writer.writerow([data[column] for column in EXPORT_COLUMNS])
        yield _drain(buffer)


def _drain(buffer: io.StringIO) -> bytes:
    data = buffer.getvalue().encode()
    buffer.seek(0)
    buffer.truncate()
    return data
