"""HTML pages: the dashboard (submit form + the user's jobs) and the live job page.

Thin views: the form defers to `submission`, the pages render the current
state from the database, and the page scripts keep them live over WebSockets.
The JSON API lives in `api.py`.
"""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from jobs.models import Job, Result
from jobs.serializers import job_to_dict
from jobs.submission import limits, service
from jobs.web.consumers import SNAPSHOT_JOBS
from jobs.web.forms import JobSubmitForm
from jobs.web.views_monitoring import changes_panel

# Rows the pages render and the scripts keep in the DOM. The job list matches
# the /ws/jobs/ snapshot, which replaces it once the socket connects.
MAX_JOB_ROWS = SNAPSHOT_JOBS
# Rendered without JavaScript; the script then keeps only a scrolling window of rows in the DOM.
MAX_RESULT_ROWS = 50


def _percent(done: int, total: int) -> int:
    """Whole percent, rounded down so 100% means every URL is done."""
    return min(100, done * 100 // total) if total else 0


def _with_percent(job: Job) -> Job:
    job.percent = _percent(job.done, job.total)  # type: ignore[attr-defined]
    return job


@login_required
@require_http_methods(["GET", "POST"])
def dashboard(request: HttpRequest) -> HttpResponse:
    """Show the submit form and the user's jobs; on a valid POST start a job and go to its page."""
    status = 200
    if request.method == "POST":
        form = JobSubmitForm(request.POST, request.FILES)
        if form.is_valid() and form.job_request is not None:
            try:
                job = service.submit(request.user, form.job_request)
            except limits.LimitExceeded as exc:
                form.add_error(None, "; ".join(exc.errors.values()))
                status = 429
            else:
                return redirect("job_detail", job_id=job.id)
        else:
            status = 400
    else:
        form = JobSubmitForm()
    recent = Job.objects.filter(owner=request.user).order_by("-created_at", "-id")[:MAX_JOB_ROWS]
    jobs = [_with_percent(job) for job in recent]
    context = {"form": form, "jobs": jobs, "max_rows": MAX_JOB_ROWS}
    return render(request, "jobs/dashboard.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def job_detail(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    """The live page of one of the user's jobs (another user's job is a 404).

    POST action=cancel is the no-JavaScript path of the Cancel button; the
    page script posts to the API instead.
    """
    job = get_object_or_404(Job, pk=job_id, owner=request.user)
    if request.method == "POST":
        if request.POST.get("action") == "cancel":
            job = service.cancel(job.id)
            messages.info(request, "Cancel requested." if not job.is_terminal else f"The job is {job.status}.")
        return redirect("job_detail", job_id=job.id)
    # The latest fetched rows, newest first; `fetched_at IS NOT NULL` lets the
    # (job, -fetched_at) index skip the pending rows.
    fetched = [Result.Outcome.SUCCEEDED, Result.Outcome.FAILED]
    results = list(
        Result.objects.filter(job=job, fetched_at__isnull=False, outcome__in=fetched)
        .order_by("-fetched_at", "-position")[:MAX_RESULT_ROWS]
    )
    # The page's bar counts the URLs fetched (a cancelled job's bar is not full); job.js keeps it so.
    job.percent = _percent(job.succeeded + job.failed, job.total)  # type: ignore[attr-defined]
    context = {
        "job": _with_percent(job),
        "job_data": (job_data := job_to_dict(job)),
        "request_info": job_data["request"],  # secret header values are ••• already
        "results": results,
        "max_rows": MAX_RESULT_ROWS,
        "pending": job.total - job.done,
        "fetched": job.succeeded + job.failed,
        "detail_api_url": reverse("api_result_detail", kwargs={"job_id": job.id, "position": 0}),
        "cancel_api_url": reverse("api_job_cancel", kwargs={"job_id": job.id}),
        "pause_api_url": reverse("api_job_pause", kwargs={"job_id": job.id}),
        "resume_api_url": reverse("api_job_resume", kwargs={"job_id": job.id}),
        "rerun_api_url": reverse("api_job_rerun_failed", kwargs={"job_id": job.id}),
        "stats_api_url": reverse("api_job_stats", kwargs={"job_id": job.id}),
        "results_api_url": reverse("api_job_results", kwargs={"job_id": job.id}),
        "csv_url": reverse("api_job_results_csv", kwargs={"job_id": job.id}),
        "jsonl_url": reverse("api_job_results_jsonl", kwargs={"job_id": job.id}),
        "changes": changes_panel(job),
    }
    return render(request, "jobs/job_detail.html", context)
