"""The JSON API: submit, list, show, cancel and export jobs.

Async views behind the session cookie or an API token (`Authorization: Bearer
…`, see tokens.py). Session requests with unsafe methods need the CSRF token in
an `X-CSRFToken` header; token requests are CSRF-exempt. Every answer is JSON,
errors included: anonymous or bad token 401, someone else's or an unknown job
404, wrong method 405, bad input 400 `{"errors": {...}}`, over a limit 429
(jobs/submission/limits.py), body too large 413.

Result exports stream from the database in keyset pages on `position`, so a
100k-URL job is never loaded at once.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import RequestDataTooBig
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.urls import reverse
from django.utils.text import slugify
from django.views.csrf import csrf_failure as html_csrf_failure

from jobs import requestdata, serializers
from jobs.exceptions import SubmissionError
from jobs.models import Job, Result
from jobs.monitoring import inputs, links, schedules
from jobs.ops import retention
from jobs.queue import requestlines
from jobs.submission import limits, service, validation
from jobs.web import tokens

JOBS_DEFAULT_LIMIT = 50
JOBS_MAX_LIMIT = 500
RESULTS_DEFAULT_LIMIT = 100
RESULTS_MAX_LIMIT = 1000
# Rows per database round trip while streaming an export.
EXPORT_PAGE_SIZE = 1000
EXPORT_COLUMNS = (*serializers.RESULT_FIELDS, "fetched_at", "method", "request_headers", "request_body_sha256")
"""The CSV's columns: the row, then the request it sent (secret header values as •••, the body's SHA-256)."""

ApiView = Callable[..., Awaitable[HttpResponse]]


class BadRequest(Exception):
    """A 400 naming the bad fields: `errors` maps each to its problem."""

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__(errors)
        self.errors = errors


def api_view(*methods: str) -> Callable[[ApiView], ApiView]:
    """Wrap an async view `(request, user, **kwargs)` with the API's JSON rules.

    Answers 405 for other methods, 401 for anonymous users, 404 for Http404
    and 400 for BadRequest/SubmissionError, all as JSON.
    """
    allowed = frozenset(methods)

    def decorator(view: ApiView) -> ApiView:
        @wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in allowed:
                response = error_response(405, f"method {request.method} not allowed")
                response["Allow"] = ", ".join(sorted(allowed))
                return response
            user = await tokens.authenticate(request)
            if isinstance(user, HttpResponse):
                return user
            if not user.is_authenticated:
                return error_response(401, "authentication required")
            if request.method == "GET":
                # Sets the csrftoken cookie, so a script client can bootstrap its X-CSRFToken from any GET.
                get_token(request)
            try:
                return await view(request, user, *args, **kwargs)
            except Http404:
                return error_response(404, "not found")
            except (BadRequest, SubmissionError) as exc:
                return JsonResponse({"errors": exc.errors}, status=400)
            except limits.LimitExceeded as exc:
                response = JsonResponse({"errors": exc.errors}, status=429)
                response["Retry-After"] = str(exc.retry_after)
                return response

        # tokens.authenticate() applies CSRF to session requests only.
        wrapper.csrf_exempt = True  # type: ignore[attr-defined]
        return wrapper

    return decorator


def error_response(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


async def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Unknown paths under /api/: JSON 404 rather than Django's HTML page."""
    return error_response(404, "not found")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: JSON 403 under /api/, Django's HTML page elsewhere."""
    if request.path_info.startswith("/api/"):
        return error_response(403, f"CSRF check failed: {reason}; send the csrftoken cookie value as X-CSRFToken")
    return html_csrf_failure(request, reason)


# --- Jobs ------------------------------------------------------------------------------


@api_view("GET", "POST")
async def jobs(request: HttpRequest, user: AbstractBaseUser) -> HttpResponse:
    """GET: the user's jobs, newest first (`?limit=`, `?before=<job id>`). POST: submit a job."""
    if request.method == "POST":
        return await _create_job(request, user)
    limit = _int_param(request, "limit", default=JOBS_DEFAULT_LIMIT, lowest=1, highest=JOBS_MAX_LIMIT)
    before = request.GET.get("before") or None
    schedule = request.GET.get("schedule", "").strip()
    page = await sync_to_async(_job_page)(user, before, limit, schedule=schedule)
    data = {"jobs": [serializers.job_to_dict(job) for job in page[:limit]], "next": None}
    if len(page) > limit:
        data["next"] = _page_url(request, before=str(page[limit - 1].id), limit=limit)
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


def decode_json(body: bytes | str) -> Any:
    """Parse a JSON document; SubmissionError({"body": ...}) says where it is malformed."""
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise SubmissionError(
            {"body": f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"}
        ) from exc
    except UnicodeDecodeError as exc:
        raise SubmissionError({"body": f"malformed JSON: not UTF-8 (byte {exc.start})"}) from exc
    except RecursionError as exc:
        raise SubmissionError({"body": "malformed JSON: nested too deeply"}) from exc


def _job_page(user: AbstractBaseUser, before: str | None, limit: int, *, schedule: str = "") -> list[Job]:
    """Up to limit+1 of the user's jobs (one schedule's runs with `schedule`), newest first, after the cursor job `before`."""
    jobs = Job.objects.filter(owner=user).order_by("-created_at", "-id")
    if schedule:
        schedule_id = schedules.owned_schedule_id(user, schedule)
        if schedule_id is None:
            raise BadRequest({"schedule": "not one of your schedules"})
        jobs = jobs.filter(monitor__schedule_id=schedule_id)
    if before is not None:
        pk = _uuid_or_none(before)
        cursor = Job.objects.filter(owner=user, pk=pk).first() if pk else None
        if cursor is None:
            raise BadRequest({"before": "not one of your jobs"})
        jobs = jobs.filter(Q(created_at__lt=cursor.created_at) | Q(created_at=cursor.created_at, id__lt=cursor.id))
    return list(jobs[: limit + 1])


@api_view("GET", "DELETE")
async def job(request: HttpRequest, user: AbstractBaseUser, job_id: str) -> HttpResponse:
    """One job. DELETE removes a finished job with its results and saved bodies (204); 409 until it is finished."""
    owned = await _get_job(user, job_id)
    if request.method == "DELETE":
        removed = await sync_to_async(retention.delete_jobs)([owned.pk]) if owned.is_terminal else None
        if removed is None or not removed.jobs:
            return error_response(409, f"the job is {owned.status}: cancel it first, or wait until it has finished")
        return HttpResponse(status=204)
    return JsonResponse(serializers.job_to_dict(owned))


@api_view("POST")
async def job_cancel(request: HttpRequest, user: AbstractBaseUser, job_id: str) -> HttpResponse:
    """Cancel: a queued job becomes `cancelled`, a running one `cancelling`. 202 either way."""
    owned = await _get_job(user, job_id)
    try:
        cancelled = await service.acancel(owned.id)
    except Job.DoesNotExist:
        raise Http404 from None
    return JsonResponse(serializers.job_to_dict(cancelled), status=202)


async def _get_job(user: AbstractBaseUser, job_id: str) -> Job:
    """The user's job `job_id`, else Http404 (bad ids and other users' jobs alike)."""
    pk = _uuid_or_none(job_id)
    if pk is None:
        raise Http404
    try:
        return await Job.objects.aget(pk=pk, owner=user)
    except Job.DoesNotExist:
        raise Http404 from None


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


# --- Results ---------------------------------------------------------------------------


@api_view("GET")
async def job_results(request: HttpRequest, user: AbstractBaseUser, job_id: str) -> HttpResponse:
    """A page of result rows in submission order: `?after=<position>&limit=&outcome=a,b`.

    Filters: `status_code=404,500`, `q=<text in the URL>`. With `order=newest`
    the rows are the final ones, most recently fetched first, and the cursor is
    `before=<position>` (the last row of the previous page), as the live page reads them.
    """
    owned = await _get_job(user, job_id)
    order = request.GET.get("order", "position")
    if order not in ("position", "newest"):
        raise BadRequest({"order": "must be position or newest"})
    newest = order == "newest"
    start = _int_param(request, "before" if newest else "after", default=-1, lowest=-1, highest=None)
    limit = _int_param(request, "limit", default=RESULTS_DEFAULT_LIMIT, lowest=1, highest=RESULTS_MAX_LIMIT)
    outcomes = _outcomes_param(request)
    filters = {"status_codes": _status_codes_param(request), "q": _search_param(request)}
    page = _newest_page if newest else _result_page
    rows = await sync_to_async(page)(owned.id, start, limit + 1, outcomes, **filters)
    cursor = {("before" if newest else "after"): rows[limit - 1].position} if len(rows) > limit else {}
    data = {"results": [serializers.result_to_dict(row) for row in rows[:limit]], "next": None}
    if cursor:
        data["next"] = _page_url(request, limit=limit, **cursor)
    return JsonResponse(data)


@api_view("GET")
async def job_results_jsonl(request: HttpRequest, user: AbstractBaseUser, job_id: str) -> HttpResponse:
    """All rows as JSON Lines, streamed in submission order."""
    owned = await _get_job(user, job_id)
    return _download(_jsonl_chunks(owned), owned, "jsonl", "application/x-ndjson; charset=utf-8")


@api_view("GET")
async def job_results_csv(request: HttpRequest, user: AbstractBaseUser, job_id: str) -> HttpResponse:
    """All rows as CSV with a header row, streamed in submission order."""
    owned = await _get_job(user, job_id)
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
        page = await sync_to_async(_result_page)(job_id, after, EXPORT_PAGE_SIZE, None)
        if page:
            yield page
        if len(page) < EXPORT_PAGE_SIZE:
            return
        after = page[-1].position


def _result_page(
    job_id: uuid.UUID, after: int, limit: int, outcomes: list[str] | None,
    *, status_codes: list[int] | None = None, q: str = "",
) -> list[Result]:  # fmt: skip
    rows = _filtered(Result.objects.filter(job_id=job_id, position__gt=after), outcomes, status_codes, q)
    return list(rows.order_by("position")[:limit])


def _newest_page(
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


# --- Query parameters ---------------------------------------------------------------------


def _int_param(request: HttpRequest, name: str, *, default: int, lowest: int, highest: int | None) -> int:
    raw = request.GET.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < lowest or (highest is not None and value > highest):
        bounds = f"from {lowest} to {highest}" if highest is not None else f"of at least {lowest}"
        raise BadRequest({name: f"must be an integer {bounds}"})
    return value


def _outcomes_param(request: HttpRequest) -> list[str] | None:
    return _choices_param(request, "outcome", Result.Outcome.values)


def _choices_param(request: HttpRequest, name: str, choices: list[str]) -> list[str] | None:
    """`?name=a,b` as a list of known choices (None when absent); an unknown one is a 400 naming it."""
    raw = request.GET.get(name, "").strip()
    if not raw:
        return None
    values = [item.strip() for item in raw.split(",") if item.strip()]
    unknown = sorted(set(values) - set(choices))
    if unknown:
        raise BadRequest({name: f"unknown {name} {', '.join(unknown)} (expected {', '.join(choices)})"})
    return values


def _status_codes_param(request: HttpRequest) -> list[int] | None:
    raw = request.GET.get("status_code", "").strip()
    if not raw:
        return None
    codes = [item.strip() for item in raw.split(",") if item.strip()]
    if not all(code.isdigit() and 100 <= int(code) <= 599 for code in codes):
        raise BadRequest({"status_code": "must be HTTP status codes from 100 to 599, separated by commas"})
    return [int(code) for code in codes]


def _search_param(request: HttpRequest) -> str:
    q = request.GET.get("q", "").strip()
    if "\x00" in q:  # PostgreSQL text cannot hold NUL, and no stored URL contains one
        raise BadRequest({"q": "must not contain NUL characters"})
    return q


def _page_url(request: HttpRequest, **params: Any) -> str:
    query = request.GET.copy()
    for key, value in params.items():
        query[key] = str(value)
    return f"{request.path}?{urlencode(sorted(query.items()))}"
