"""Downloading saved bodies (job option `save_bodies`; see bodies.py): the owner's only.

One body at `/api/jobs/<id>/results/<position>/body`, all of a job's bodies as
one zip streamed at `/api/jobs/<id>/bodies.zip` (with an index.csv). Bodies are
served as `application/octet-stream` attachments with `nosniff`, never with the
type the remote server claimed, so a fetched HTML page cannot run script on
this site.
"""

from __future__ import annotations

import csv
import io
import uuid
import zipfile
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.storage import default_storage
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse

from jobs.models import Result
from jobs.web.api_base import api_view, get_job
from jobs.web.api_exports import export_filename

CHUNK = 64 * 1024


# --- downloads --------------------------------------------------------------------------------


@api_view("GET")
async def result_body(request: HttpRequest, user: AbstractBaseUser, job_id: str, position: int) -> HttpResponse:
    """One saved body, as an attachment; 404 if the job is not the user's or no body was kept."""
    owned = await get_job(user, job_id)
    row = await Result.objects.filter(job=owned, position=position).exclude(body="").afirst()
    if row is None:
        raise Http404
    response = StreamingHttpResponse(_file_chunks(row.body), content_type="application/octet-stream")
    response["Content-Disposition"] = f'attachment; filename="{owned.id.hex[:8]}-{position}.bin"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


@api_view("GET")
async def job_bodies_zip(request: HttpRequest, user: AbstractBaseUser, job_id: str) -> HttpResponse:
    """Every saved body of the job in one zip (streamed), with an index.csv of position, URL and details."""
    owned = await get_job(user, job_id)
    response = StreamingHttpResponse(_zip_chunks(owned.id), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{export_filename(owned, "zip").replace("-results", "-bodies")}"'
    response["Cache-Control"] = "no-store"
    return response


async def _file_chunks(name: str) -> AsyncIterator[bytes]:
    handle = await sync_to_async(default_storage.open, thread_sensitive=False)(name, "rb")
    try:
        while chunk := await sync_to_async(handle.read, thread_sensitive=False)(CHUNK):
            yield chunk
    finally:
        await sync_to_async(handle.close, thread_sensitive=False)()


class _Output(io.RawIOBase):
    """A write-only, unseekable buffer that zipfile writes into and the response drains."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


async def _zip_chunks(job_id: uuid.UUID) -> AsyncIterator[bytes]:
    """The zip, built as it streams: one entry per saved body (stored, not recompressed), then index.csv."""
    output = _Output()
    index = io.StringIO()
    writer = csv.writer(index)
    writer.writerow(["file", "position", "url", "final_url", "status_code", "content_type", "bytes", "sha256"])
    # zipfile writes data descriptors when it cannot seek, so no entry needs to be held whole.
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_STORED) as archive:
        after = -1
        while page := await _saved_rows(job_id, after):
            for row in page:
                entry = f"bodies/{row.position:06d}.bin"
                with archive.open(entry, "w", force_zip64=True) as target:
                    async for chunk in _file_chunks(row.body):
                        target.write(chunk)
                        yield output.take()
                writer.writerow([entry, row.position, row.url, row.final_url, row.status_code, row.content_type,
                                 row.bytes, row.sha256])  # fmt: skip
            after = page[-1].position
        archive.writestr("index.csv", index.getvalue())
    yield output.take()


@sync_to_async
def _saved_rows(job_id: uuid.UUID, after: int) -> list[Result]:
    rows = Result.objects.filter(job_id=job_id, position__gt=after).exclude(body="").order_by("position")
    return list(rows[:500])
