"""The JSON API behind the live page's controls: pause, resume, re-run failed, and the job's stats.

Same rules as `api.py` (its `api_view`: session auth, CSRF on POST, JSON
errors). A control that does not apply to the job's status answers 409 with
the reason, so a script learns why nothing happened.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractBaseUser
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse

from jobs import hoststats, serializers, stats
from jobs.models import Job
from jobs.monitoring import links
from jobs.submission import service
from jobs.web.api_base import api_view, error_response, get_job

# Statuses a pause or resume cannot change.
_SETTLED = frozenset({*Job.TERMINAL, Job.Status.CANCELLING})


@api_view("POST")
async def job_pause(request: HttpRequest, user: AbstractBaseUser, job_id: str) -> HttpResponse:
    """Pause: a queued job becomes `paused`, a running one `pausing` (then `paused`). 202, or 409 if settled."""
    return await _control(user, job_id, service.apause, "cannot pause a {} job (only a queued or running one)")


@api_view("POST")
async def job_resume(request: HttpRequest, user: AbstractBaseUser, job_id: str) -> HttpResponse:
    """Resume: a paused job is queued again (a `pausing` one goes on running). 202, or 409 if settled."""
    return await _control(user, job_id, service.aresume, "cannot resume a {} job (only a paused one)")


async def _control(
    user: AbstractBaseUser, job_id: str, change: Callable[[uuid.UUID], Awaitable[Job]], refusal: str
) -> HttpResponse:
    """Apply `change` to the user's job: 202 with the job, or 409 (`refusal` names its status) if it is settled."""
    owned = await get_job(user, job_id)
    if owned.status in _SETTLED:
        return error_response(409, refusal.format(owned.status))
    try:
        job = await change(owned.id)
    except Job.DoesNotExist:
        raise Http404 from None
    return JsonResponse(serializers.job_to_dict(job), status=202)


@api_view("POST")
async def job_rerun_failed(request: HttpRequest, user: AbstractBaseUser, job_id: str) -> HttpResponse:
    """A new job over the failed URLs only, same options: 201 with its JSON, 409 if none failed."""
    owned = await get_job(user, job_id)
    job = await sync_to_async(links.rerun)(owned, failed_only=True)
    if job is None:
        return error_response(409, "the job has no failed URLs to re-run")
    response = JsonResponse(serializers.job_to_dict(job), status=201)
    response["Location"] = reverse("api_job", args=[job.id])
    return response


@api_view("GET")
async def job_stats(request: HttpRequest, user: AbstractBaseUser, job_id: str) -> HttpResponse:
    """The job, its status-code / error-class breakdown, its throughput per second, and its hosts (in flight
    across all workers, the limit in force)."""
    owned = await get_job(user, job_id)
    data = await sync_to_async(_stats)(owned)
    return JsonResponse(data)


# Reads of one answer at most: a job fetching hundreds of URLs a second may never be still between two reads.
STATS_READS = 5


def _stats(job: Job) -> dict[str, object]:
    """The job and its aggregates as of one moment, so the page's figures all agree with each other.

    The counters and the rows are committed together, and counters only grow, so when the job row
    reads the same before and after the aggregates, the aggregates saw exactly that state (on
    PostgreSQL each statement has its own snapshot; this holds on both databases without locking).
    """
    for _ in range(STATS_READS):
        job.refresh_from_db()
        before = (job.succeeded, job.failed, job.cancelled, job.status)
        data = {**stats.breakdown(job.pk), "throughput": stats.throughput(job.pk)}
        job.refresh_from_db()
        if (job.succeeded, job.failed, job.cancelled, job.status) == before:
            break
    return {"job": serializers.job_to_dict(job), **data, "hosts": hoststats.job_hosts(job)}
