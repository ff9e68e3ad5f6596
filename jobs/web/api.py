"""The JSON API's job endpoints: submit, list, show, delete and cancel jobs, and page through their results.

The rules every endpoint shares (authentication, JSON errors, query
parameters) are in api_base.py; exports in api_exports.py.
"""

from __future__ import annotations

import uuid
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import RequestDataTooBig
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse

from jobs import serializers
from jobs.exceptions import SubmissionError
from jobs.models import Job, Result
from jobs.monitoring import inputs, links, schedules
from jobs.ops import retention
from jobs.submission import service, validation
from jobs.web.api_base import (
    BadRequest,
    api_view,
    decode_json,
    error_response,
    get_job,
    int_param,
    outcomes_param,
    page_url,
    search_param,
    status_codes_param,
    uuid_or_none,
)

JOBS_DEFAULT_LIMIT = 50
JOBS_MAX_LIMIT = 500
RESULTS_DEFAULT_LIMIT = 100
RESULTS_MAX_LIMIT = 1000


# --- Jobs ------------------------------------------------------------------------------


@api_view("GET", "POST")
async def jobs(request: HttpRequest, user: AbstractBaseUser) -> HttpResponse:
    """GET: the user's jobs, newest first (`?limit=`, `?before=<job id>`). POST: submit a job."""
    if request.method == "POST":
        return await _create_job(request, user)
    limit = int_param(request, "limit", default=JOBS_DEFAULT_LIMIT, lowest=1, highest=JOBS_MAX_LIMIT)
    before = request.GET.get("before") or None
    schedule = request.GET.get("schedule", "").strip()
    page = await sync_to_async(_job_page)(user, before, limit, schedule=schedule)
    data = {"jobs": [serializers.job_to_dict(job) for job in page[:limit]], "next": None}
    if len(page) > limit:
        data["next"] = page_url(request, before=str(page[limit - 1].id), limit=limit)
    return JsonResponse(data)


async def _create_job(request: HttpRequest, user: AbstractBaseUser) -> HttpResponse:
    try:
        body = request.body
    except RequestDataTooBig:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return JsonResponse({"errors": {"body": f"request body larger than {limit} bytes"}}, status=413)
    # Parsing and checking 100k URLs is CPU work: keep it off the event loop.
    job_request, notify = await sync_to_async(_parse_submission, thread_sensitive=False)(body)
    job = await service.asubmit(user, job_request)
    if notify:
        await sync_to_async(links.link_notify)(job, notify=notify.as_fields())
    response = JsonResponse(serializers.job_detail_to_dict(job), status=201)
    response["Location"] = reverse("api_job", args=[job.id])
    return response


def _parse_submission(body: bytes) -> tuple[validation.JobRequest, inputs.Notify]:
    """The job request and its notify_* fields (jobs/monitoring/inputs.py), every problem of both at once."""
    data = decode_json(body)
    errors: dict[str, Any] = {}
    notify = inputs.Notify()
    if isinstance(data, dict):
        notify = inputs.clean_notify(data, errors)
        data = {key: value for key, value in data.items() if key not in inputs.NOTIFY_FIELDS}
    try:
        job_request = validation.validate_submission(data)
    except SubmissionError as exc:
        raise SubmissionError({**exc.errors, **errors}) from None
    if errors:
        raise SubmissionError(errors)
    return job_request, notify


def _job_page(user: AbstractBaseUser, before: str | None, limit: int, *, schedule: str = "") -> list[Job]:
    """Up to limit+1 of the user's jobs (one schedule's runs with `schedule`), newest first, after the cursor job `before`."""
    jobs = Job.objects.filter(owner=user).order_by("-created_at", "-id")
    if schedule:
        schedule_id = schedules.owned_schedule_id(user, schedule)
        if schedule_id is None:
            raise BadRequest({"schedule": "not one of your schedules"})
        jobs = jobs.filter(monitor__schedule_id=schedule_id)
    if before is not None:
        pk = uuid_or_none(before)
        cursor = Job.objects.filter(owner=user, pk=pk).first() if pk else None
        if cursor is None:
            raise BadRequest({"before": "not one of your jobs"})
        jobs = jobs.filter(Q(created_at__lt=cursor.created_at) | Q(created_at=cursor.created_at, id__lt=cursor.id))
    return list(jobs[: limit + 1])


@api_view("GET", "DELETE")
async def job(request: HttpRequest, user: AbstractBaseUser, job_id: str) -> HttpResponse:
    """One job. DELETE removes a finished job with its results and saved bodies (204); 409 until it is finished."""
    owned = await get_job(user, job_id)
    if request.method == "DELETE":
        removed = await sync_to_async(retention.delete_jobs)([owned.pk]) if owned.is_terminal else None
        if removed is None or not removed.jobs:
            return error_response(409, f"the job is {owned.status}: cancel it first, or wait until it has finished")
        return HttpResponse(status=204)
    return JsonResponse(serializers.job_to_dict(owned))


@api_view("POST")
async def job_cancel(request: HttpRequest, user: AbstractBaseUser, job_id: str) -> HttpResponse:
    """Cancel: a queued job becomes `cancelled`, a running one `cancelling`. 202 either way."""
    owned = await get_job(user, job_id)
    try:
        cancelled = await service.acancel(owned.id)
    except Job.DoesNotExist:
        raise Http404 from None
    return JsonResponse(serializers.job_to_dict(cancelled), status=202)



# --- Results ---------------------------------------------------------------------------


@api_view("GET")
async def job_results(request: HttpRequest, user: AbstractBaseUser, job_id: str) -> HttpResponse:
    """A page of result rows in submission order: `?after=<position>&limit=&outcome=a,b`.

    Filters: `status_code=404,500`, `q=<text in the URL>`. With `order=newest`
    the rows are the final ones, most recently fetched first, and the cursor is
    `before=<position>` (the last row of the previous page), as the live page reads them.
    """
    owned = await get_job(user, job_id)
    order = request.GET.get("order", "position")
    if order not in ("position", "newest"):
        raise BadRequest({"order": "must be position or newest"})
    newest = order == "newest"
    start = int_param(request, "before" if newest else "after", default=-1, lowest=-1, highest=None)
    limit = int_param(request, "limit", default=RESULTS_DEFAULT_LIMIT, lowest=1, highest=RESULTS_MAX_LIMIT)
    outcomes = outcomes_param(request)
    filters = {"status_codes": status_codes_param(request), "q": search_param(request)}
    page = newest_page if newest else result_page
    rows = await sync_to_async(page)(owned.id, start, limit + 1, outcomes, **filters)
    cursor = {("before" if newest else "after"): rows[limit - 1].position} if len(rows) > limit else {}
    data = {"results": [serializers.result_to_dict(row) for row in rows[:limit]], "next": None}
    if cursor:
        data["next"] = page_url(request, limit=limit, **cursor)
    return JsonResponse(data)


def result_page(
    job_id: uuid.UUID, after: int, limit: int, outcomes: list[str] | None,
    *, status_codes: list[int] | None = None, q: str = "",
) -> list[Result]:  # fmt: skip
    rows = _filtered(Result.objects.filter(job_id=job_id, position__gt=after), outcomes, status_codes, q)
    return list(rows.order_by("position")[:limit])


def newest_page(
    job_id: uuid.UUID, before: int, limit: int, outcomes: list[str] | None,
    *, status_codes: list[int] | None = None, q: str = "",
) -> list[Result]:  # fmt: skip
    """Final rows, most recently fetched first, after the cursor row `before` (keyset on fetched_at, position)."""
    rows = Result.objects.filter(job_id=job_id, fetched_at__isnull=False).exclude(outcome=Result.Outcome.PENDING)
    if before >= 0:
        cursor = Result.objects.filter(job_id=job_id, position=before).values_list("fetched_at", flat=True).first()
        if cursor is None:
            raise BadRequest({"before": "no fetched result at that position"})
        rows = rows.filter(Q(fetched_at__lt=cursor) | Q(fetched_at=cursor, position__lt=before))
    rows = _filtered(rows, outcomes, status_codes, q)
    return list(rows.order_by("-fetched_at", "-position")[:limit])


def _filtered(rows: Any, outcomes: list[str] | None, status_codes: list[int] | None, q: str) -> Any:
    if outcomes:
        rows = rows.filter(outcome__in=outcomes)
    if status_codes:
        rows = rows.filter(status_code__in=status_codes)
    if q:
        rows = rows.filter(url__icontains=q)
    return rows
