"""HTML pages of monitoring: the schedules list (with a create form), a schedule's page, the account page.

Thin views over jobs/monitoring/: the create form goes through the same
validation as `POST /api/schedules/` (so a bad cron names the same problem),
and the schedule page's script (static/js/schedule.js) keeps the run history
live by reading `GET /api/schedules/<id>/runs/`.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from jobs.monitoring import changes, history, inputs, schedules, webhooks
from jobs.monitoring_models import Change, JobMonitor, NotifyOn, Schedule, WebhookSecret
from jobs.progress import groups
from jobs.exceptions import SubmissionError
from jobs.submission.parsing import parse_url_lines

FORM_FIELDS = ("name", "urls", "when", "every", "timezone", "notify_url", "notify_email")


@login_required
@require_http_methods(["GET", "POST"])
def schedule_list(request: HttpRequest) -> HttpResponse:
    """The user's schedules; a valid POST creates one and opens its page."""
    errors: dict[str, Any] = {}
    values: dict[str, Any] = {"when": "interval", "every": "3600", "timezone": "UTC", "notify_on": ["finished"]}
    if request.method == "POST":
        values = {name: request.POST.get(name, "") for name in FORM_FIELDS}
        values["notify_on"] = request.POST.getlist("notify_on")
        try:
            spec = inputs.validate_schedule(_form_data(values))
        except SubmissionError as exc:
            errors = {key: _message(value) for key, value in exc.errors.items()}
        else:
            schedule = schedules.create_schedule(owner=request.user, spec=spec)
            messages.success(request, f"Schedule created; it next runs at {schedule.next_run_at:%Y-%m-%d %H:%M:%S} UTC.")
            return redirect("schedule_detail", schedule_id=schedule.pk)
    rows = list(Schedule.objects.filter(owner=request.user))
    context = {"schedules": rows, "errors": errors, "values": values, "notify_choices": NotifyOn.values}
    return render(request, "jobs/schedules.html", context, status=400 if errors else 200)


def _form_data(values: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": values["name"], "urls": parse_url_lines(values["urls"]), "timezone": values["timezone"],
        "notify_url": values["notify_url"], "notify_email": values["notify_email"], "notify_on": values["notify_on"],
    }  # fmt: skip
    data["cron" if values["when"] == "cron" else "interval"] = values["every"].strip() or None
    return data


def _message(value: Any) -> str:
    """A field's errors as one line (the URL errors are a list of items naming each line)."""
    if isinstance(value, list):
        return "; ".join(
            (f"line {item['line']}: " if "line" in item else "") + str(item.get("error", "")) for item in value
        )
    return str(value)


@login_required
@require_http_methods(["GET", "POST"])
def schedule_detail(request: HttpRequest, schedule_id: int) -> HttpResponse:
    """A schedule, its run history and failure sparkline; POST action=run|enable|disable|delete."""
    schedule = get_object_or_404(Schedule, pk=schedule_id, owner=request.user)
    if request.method == "POST":
        return _act(request, schedule, request.POST.get("action", ""))
    context = {
        "schedule": schedule,
        "runs": history.recent_runs(schedule),
        "sparkline": history.sparkline(schedule),
        "runs_api_url": reverse("api_schedule_runs", args=[schedule.pk]),
        "url_preview": schedule.urls[:20],
    }
    return render(request, "jobs/schedule_detail.html", context)


def _act(request: HttpRequest, schedule: Schedule, action: str) -> HttpResponse:
    if action == "run":
        run = schedules.run_now(schedule)
        if run.job is None:
            messages.warning(request, f"Not started: {run.reason}.")
        else:
            groups.wake_workers_sync()
            messages.success(request, "Run started.")
    elif action in ("enable", "disable"):
        spec = inputs.validate_schedule({**schedules.as_input(schedule), "enabled": action == "enable"})
        schedules.apply_spec(schedule, spec)
        schedule.save()
        messages.success(request, f"Schedule {action}d.")
    elif action == "delete":
        schedule.delete()
        messages.success(request, "Schedule deleted; its jobs are kept.")
        return redirect("schedule_list")
    return redirect("schedule_detail", schedule_id=schedule.pk)


@login_required
@require_http_methods(["GET", "POST"])
def account(request: HttpRequest) -> HttpResponse:
    """The webhook signing secret: created or rotated on POST and shown that once."""
    new_secret = None
    if request.method == "POST" and request.POST.get("action") == "rotate":
        new_secret = webhooks.rotate_secret(request.user)
    existing = WebhookSecret.objects.filter(user=request.user).first()
    context = {"new_secret": new_secret, "existing": existing, "header": webhooks.SIGNATURE_HEADER}
    return render(request, "jobs/account.html", context)


PANEL_ROWS = 100


def changes_panel(job: Any) -> dict[str, Any] | None:
    """The job page's "Changes since the previous run" panel: None for a job that re-runs no list."""
    monitor = JobMonitor.objects.filter(job=job).first()
    if monitor is None or (monitor.previous_id is None and monitor.schedule_id is None):
        return None
    context: dict[str, Any] = {"previous": monitor.previous_id, "computed": monitor.settled_at is not None}
    if monitor.previous_id and context["computed"]:
        counts = monitor.change_counts or changes.counts(job.pk)
        rows = list(Change.objects.filter(job=job).exclude(kind=Change.Kind.UNCHANGED).order_by("position")[: PANEL_ROWS + 1])
        context.update(
            counts=list(counts.items()), rows=rows[:PANEL_ROWS], more=len(rows) > PANEL_ROWS,
            open=changes.changed(counts) > 0,
            csv_url=reverse("api_job_changes_csv", args=[job.pk]), api_url=reverse("api_job_changes", args=[job.pk]),
        )  # fmt: skip
    return context
