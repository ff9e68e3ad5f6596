"""The page of one result row: what was sent (the request, secrets as •••), what came back, the saved body.

A saved body (`save_bodies`) that is JSON is shown pretty-printed (API calls
are the reason to keep bodies); any other body is offered for download only,
never rendered, like every saved body (jobs/web/downloads.py).
"""

from __future__ import annotations

import json
import uuid

from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from jobs import requestdata
from jobs.models import Job, RequestLine, Result

MAX_SHOWN_JSON_BYTES = 1024 * 1024
"""Larger JSON bodies are only downloadable: pretty-printing them would make a page of megabytes."""


@require_GET
@login_required
def result_detail(request: HttpRequest, job_id: uuid.UUID, position: int) -> HttpResponse:
    job = get_object_or_404(Job, pk=job_id, owner=request.user)
    row = Result.objects.filter(job=job, position=position).defer(None).first()
    if row is None:
        raise Http404
    line = RequestLine.objects.filter(job=job, position=position).first() if job.line_requests else None
    context = {
        "job": job,
        "row": row,
        "request_info": requestdata.line_summary(job, line),
        "pretty_json": pretty_json(row),
    }
    return render(request, "jobs/result_detail.html", context)


def pretty_json(row: Result) -> str | None:
    """The saved body, indented, if it is JSON of a showable size; else None."""
    if not row.body or "json" not in row.content_type.lower() or (row.bytes or 0) > MAX_SHOWN_JSON_BYTES:
        return None
    try:
        with default_storage.open(row.body, "rb") as handle:
            data = json.loads(handle.read(MAX_SHOWN_JSON_BYTES + 1))
    except (OSError, ValueError):  # gone from storage, or not JSON after all (UnicodeDecodeError is a ValueError)
        return None
    return json.dumps(data, indent=2, ensure_ascii=False)
