"""One result in full: `GET /api/jobs/<id>/results/<position>/`, what the live page's detail panel shows.

The row as the list has it, plus what a person debugging one URL wants in one
place: the request the worker made (method, URL, headers, the job's limits),
the response it got (final URL, redirects, its headers, size, digest),
the timings, the error split into its short message and the attempt history
(jobs/engine/errors.py wrote both), and the saved body's download link.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse

from jobs import requestdata, serializers
from jobs.engine.client import USER_AGENT
from jobs.engine.errors import split_error
from jobs.models import Job, RequestLine, Result
from jobs.web.api_base import api_view, get_job

# What the engine's client sends with every request (jobs/engine/client.py; httpx adds Accept-Encoding).
REQUEST_HEADERS = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"}


@api_view("GET")
async def result_detail(request: HttpRequest, user: AbstractBaseUser, job_id: str, position: int) -> HttpResponse:
    """The result at `position` (0-based, as everywhere) of the user's job; 404 for no such row."""
    owned = await get_job(user, job_id)
    row = await Result.objects.filter(job=owned, position=position).defer(None).afirst()
    if row is None:
        raise Http404
    line = await RequestLine.objects.filter(job=owned, position=position).afirst() if owned.line_requests else None
    return JsonResponse(detail_dict(owned, row, line))


def detail_dict(job: Job, row: Result, line: RequestLine | None = None) -> dict[str, Any]:
    """The JSON of one result in full (schema `ResultDetail` in openapi.json); `line`: the row's overrides."""
    summary, history = split_error(row.error)
    sent = requestdata.line_summary(job, line)  # the method and headers the row sent, secret values •••
    data = serializers.result_to_dict(row)
    data.update(
        {
            "error_summary": summary,
            "attempt_history": history,
            "request": {
                "method": sent["method"],
                "url": row.url,
                "headers": {**REQUEST_HEADERS, **sent["headers"]},
                "timeout": job.timeout,
                "retries": job.retries,
                "max_redirects": job.max_redirects,
                "max_bytes": job.max_bytes,
            },
            "response_headers": row.response_headers(),
            "body_url": (
                reverse("api_result_body", kwargs={"job_id": job.pk, "position": row.position}) if row.body else None
            ),
        }
    )
    return data
