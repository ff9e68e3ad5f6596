"""The JSON API of monitoring: schedules (CRUD, run now) and a job's changes since the previous run.

Same rules as `api.py` (its `api_view`: session or token auth, CSRF on
unsafe session requests, JSON errors, 404 for someone else's schedule).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractBaseUser
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils.text import slugify

from jobs.models import Job
from jobs.monitoring import changes, history, inputs, schedules, serialize
from jobs.monitoring_models import Change, JobMonitor, Schedule
from jobs.progress import groups
from jobs.web.api_base import BadRequest, api_view, choices_param, decode_json, get_job, int_param, page_url

SCHEDULES_MAX = 500
CHANGES_DEFAULT_LIMIT = 100
CHANGES_MAX_LIMIT = 1000
EXPORT_PAGE_SIZE = 2000


# --- schedules ---------------------------------------------------------------------------------


@api_view("GET", "POST")
async def schedule_list(request: HttpRequest, user: AbstractBaseUser) -> HttpResponse:
    """GET: the user's schedules, newest first. POST: create one (201)."""
    if request.method == "POST":
        spec = await sync_to_async(inputs.validate_schedule, thread_sensitive=False)(decode_json(request.body))
        schedule = await sync_to_async(schedules.create_schedule)(owner=user, spec=spec)
        response = JsonResponse(serialize.schedule_to_dict(schedule), status=201)
        response["Location"] = reverse("api_schedule", args=[schedule.pk])
        return response
    rows = await sync_to_async(lambda: list(Schedule.objects.filter(owner=user)[:SCHEDULES_MAX]))()
    return JsonResponse({"schedules": [serialize.schedule_summary(row) for row in rows]})


@api_view("GET", "PATCH", "DELETE")
async def schedule_detail(request: HttpRequest, user: AbstractBaseUser, schedule_id: str) -> HttpResponse:
    """GET one schedule; PATCH any of its fields (validated whole); DELETE it (its jobs stay)."""
    schedule = await _get_schedule(user, schedule_id)
    if request.method == "DELETE":
        await schedule.adelete()
        return HttpResponse(status=204)
    if request.method == "PATCH":
        patch = decode_json(request.body)
        if not isinstance(patch, dict):
            raise BadRequest({"body": "must be a JSON object of the fields to change"})
        schedule = await sync_to_async(_patch)(schedule, patch)
    return JsonResponse(serialize.schedule_to_dict(schedule))


def _patch(schedule: Schedule, patch: dict[str, Any]) -> Schedule:
    merged = {**schedules.as_input(schedule), **patch}
    # Switching between cron and interval: giving one replaces the other.
    if patch.get("cron") not in (None, "") and "interval" not in patch:
        merged["interval"] = None
    if patch.get("interval") not in (None, "") and "cron" not in patch:
        merged["cron"] = None
    spec = inputs.validate_schedule(merged)
    schedules.apply_spec(schedule, spec)
    schedule.save()
    return schedule


@api_view("POST")
async def schedule_run(request: HttpRequest, user: AbstractBaseUser, schedule_id: str) -> HttpResponse:
    """Run now: 201 with the run (its job), or 409 when the previous run is still going (recorded as skipped)."""
    schedule = await _get_schedule(user, schedule_id)
    run = await sync_to_async(schedules.run_now)(schedule)
    data = await sync_to_async(lambda: serialize.run_to_dict(run))()
    if run.job is None:
        return JsonResponse({"error": run.reason, "run": data}, status=409)
    await groups.wake_workers()
    await groups.publish_job_update(run.job)
    return JsonResponse(data, status=201)


@api_view("GET")
async def schedule_runs(request: HttpRequest, user: AbstractBaseUser, schedule_id: str) -> HttpResponse:
    """The schedule's newest runs (started or skipped) and the failure sparkline its page draws."""
    schedule = await _get_schedule(user, schedule_id)
    runs = await sync_to_async(history.recent_runs)(schedule)
    spark = await sync_to_async(history.sparkline)(schedule)
    return JsonResponse({"runs": runs, "sparkline": spark})


async def _get_schedule(user: AbstractBaseUser, schedule_id: str) -> Schedule:
    if not schedule_id.isdigit():
        raise Http404
    try:
        return await Schedule.objects.aget(pk=int(schedule_id), owner=user)
    except Schedule.DoesNotExist:
        raise Http404 from None


# --- changes -------------------------------------------------------------------------------------


@api_view("GET")
async def job_changes(request: HttpRequest, user: AbstractBaseUser, job_id: str) -> HttpResponse:
    """What changed since the previous run of the job's list: `?kind=a,b&after=<position>&limit=`."""
    owned = await get_job(user, job_id)
    kinds = _kinds_param(request)
    after = int_param(request, "after", default=-1, lowest=-1, highest=None)
    limit = int_param(request, "limit", default=CHANGES_DEFAULT_LIMIT, lowest=1, highest=CHANGES_MAX_LIMIT)
    data = await sync_to_async(_changes_page)(owned, kinds, after, limit)
    rows = data.pop("rows")
    data["changes"] = [serialize.change_to_dict(row) for row in rows[:limit]]
    data["next"] = page_url(request, after=rows[limit - 1].position, limit=limit) if len(rows) > limit else None
    return JsonResponse(data)


def _changes_page(job: Job, kinds: list[str] | None, after: int, limit: int) -> dict[str, Any]:
    monitor = JobMonitor.objects.filter(job=job).first()
    previous = str(monitor.previous_id) if monitor is not None and monitor.previous_id else None
    if previous is None:
        return {"previous": None, "counts": {}, "rows": []}
    counts = monitor.change_counts if monitor.change_counts is not None else changes.counts(job.pk)
    rows = Change.objects.filter(job=job, position__gt=after)
    if kinds:
        rows = rows.filter(kind__in=kinds)
    return {
        "previous": previous, "counts": counts, "computed": monitor.settled_at is not None,
        "rows": list(rows.order_by("position")[: limit + 1]),
    }  # fmt: skip


def _kinds_param(request: HttpRequest) -> list[str] | None:
    return choices_param(request, "kind", Change.Kind.values)


@api_view("GET")
async def job_changes_csv(request: HttpRequest, user: AbstractBaseUser, job_id: str) -> HttpResponse:
    """Every change row as CSV (`?kind=` filters), streamed in position order."""
    owned = await get_job(user, job_id)
    kinds = _kinds_param(request)
    response = StreamingHttpResponse(_csv_chunks(owned, kinds), content_type="text/csv; charset=utf-8")
    stem = slugify(owned.name)[:60].strip("-") or "job"
    response["Content-Disposition"] = f'attachment; filename="{stem}-{owned.pk.hex[:8]}-changes.csv"'
    response["Cache-Control"] = "no-store"
    return response


async def _csv_chunks(job: Job, kinds: list[str] | None) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(serialize.CHANGE_FIELDS)
    after = -1
    while True:
        page = await sync_to_async(_changes_page)(job, kinds, after, EXPORT_PAGE_SIZE - 1)
        rows = page["rows"]
        for row in rows:
            writer.writerow([getattr(row, field) for field in serialize.CHANGE_FIELDS])
        yield _drain(buffer)
        if len(rows) < EXPORT_PAGE_SIZE:
            return
        after = rows[-1].position


def _drain(buffer: io.StringIO) -> bytes:
    data = buffer.getvalue().encode()
    buffer.seek(0)
    buffer.truncate()
    return data
