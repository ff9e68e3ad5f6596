"""Admin: the history of all jobs, their results, and cancel / re-run actions.

A job may have 100k results, so they are never loaded into the job's page:
the job links to the Result changelist filtered by job (paginated, without a
full-table count) and shows only a capped preview of failures. Fields the
worker owns are read-only; jobs are created by submission, never here.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Sum
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from jobs import requestdata
from jobs.models import Job, Result
from jobs.ops import retention
from jobs.monitoring import links as monitoring_links
from jobs.submission import service

FAILURE_PREVIEW_ROWS = 10


def _percent(done: int, total: int) -> int:
    return min(100, done * 100 // total) if total else 0


def _results_url(job: Job, **filters: str) -> str:
    query = {"job__id__exact": str(job.pk), **filters}
    return f"{reverse('admin:jobs_result_changelist')}?{urlencode(query)}"


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "owner",
        "status",
        "progress_display",
        "succeeded",
        "failed",
        "duration_display",
        "created_display",
    )
    list_display_links = ("__str__",)
    list_filter = ("status", "owner", "created_at")
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    search_fields = ("name",)
    search_help_text = "Name (contains), a job id, or an exact URL (http://… or https://…) the job fetched."
    ordering = ("-created_at",)
    list_per_page = 50
    actions = ("cancel_jobs", "rerun_jobs", "rerun_failed_urls")
    fieldsets = (
        (None, {"fields": ("id", "live_page", "name", "owner", "status", "error")}),
        ("Options", {"fields": ("concurrency", "timeout", "per_host", "host_delay", "per_host_rate", "autothrottle",
                                "retries", "max_redirects", "max_bytes", "respect_robots", "save_bodies",
                                "url_deadline", "job_deadline")}),
        ("Request", {"fields": ("request_display",)}),
        ("Submission", {"fields": ("duplicate_urls", "skipped_urls", "skipped_display")}),
        ("Progress", {"fields": ("progress_display", "total", "succeeded", "failed", "cancelled", "results_links",
                                 "failure_preview")}),
        ("Times", {"fields": ("created_at", "started_at", "deadline_at", "finished_at", "duration_display")}),
        ("Workers", {"fields": ("workers_display",)}),
    )
    # Only the display name is an admin's to change: the options belong to the
    # submission, everything else to the queue and the worker.
    readonly_fields = (
        "id", "live_page", "owner", "status", "error", "concurrency", "timeout", "per_host", "host_delay",
        "per_host_rate", "autothrottle", "retries", "max_redirects", "max_bytes", "respect_robots", "save_bodies",
        "url_deadline", "job_deadline", "deadline_at", "request_display", "duplicate_urls", "skipped_urls",
        "skipped_display",
        "progress_display", "total", "succeeded", "failed", "cancelled", "results_links", "failure_preview",
        "created_at", "started_at", "finished_at", "duration_display", "workers_display",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A job needs its Result rows; service.submit (the dashboard or the API) creates both.
        return False

    def save_model(self, request: HttpRequest, obj: Job, form: Any, change: bool) -> None:
        """Write only the fields the admin changed.

        A plain save() writes every column from the row as it was read, so it
        would put back stale counters and status if the worker recorded
        results in the meantime.
        """
        if form.changed_data:
            obj.save(update_fields=form.changed_data)

    # --- deleting: finished jobs only, with their bodies, in bounded steps (jobs/ops/retention.py) ----

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        """What the confirmation page lists: the jobs and counts, not each of their 100k results.

        An unfinished job is shown as protected (a worker may still be writing its rows and bodies), so
        Django refuses the deletion; results need no delete permission of their own (the worker's rows).
        """
        jobs = list(objs)
        finished = [job for job in jobs if job.is_terminal]
        removed = retention.count_jobs(job.pk for job in finished)
        counts = {"jobs": removed.jobs, "results": removed.results, "saved bodies": removed.bodies}
        protected = [f"{job} is {job.status}: cancel it first, or wait until it has finished"
                     for job in jobs if not job.is_terminal]  # fmt: skip
        return [str(job) for job in finished], counts, set(), protected

    def delete_model(self, request: HttpRequest, obj: Job) -> None:
        retention.delete_jobs([obj.pk])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        retention.delete_jobs(queryset.values_list("pk", flat=True))

    # --- columns -------------------------------------------------------------------

    @admin.display(description="progress")
    def progress_display(self, job: Job) -> str:
        return f"{job.done}/{job.total} ({_percent(job.done, job.total)}%)"

    @admin.display(description="request")
    def request_display(self, job: Job) -> str:
        """Method, headers (secret values •••: the sealed column is never read here), body size and hash."""
        summary = requestdata.request_summary(job.method, job.request_headers, job.request_body)
        headers = format_html_join("", "<li><code>{}: {}</code></li>", summary["headers"].items())
        body = (f"{summary['body_bytes']} bytes, SHA-256 {summary['body_sha256']}" if summary["body_bytes"] is not None
                else "no body")  # fmt: skip
        extra = "; some lines send their own request" if job.line_requests else ""
        retry = ", POST/PATCH retried too" if job.retry_unsafe else ""
        return format_html("{} ({}{}{})<ul>{}</ul>", summary["method"], body, retry, extra, headers)

    @admin.display(description="live page")
    def live_page(self, job: Job) -> str:
        return format_html('<a href="{}">Open the live page</a>', reverse("job_detail", kwargs={"job_id": job.pk}))

    @admin.display(description="created", ordering="created_at")
    def created_display(self, job: Job) -> str:
        """Short and on one line (Django's full date wraps and is cut off in a 1280 px window)."""
        return format_html('<span class="nowrap">{}</span>', timezone.localtime(job.created_at).strftime("%Y-%m-%d %H:%M"))

    @admin.display(description="skipped lines")
    def skipped_display(self, job: Job) -> str:
        if not job.skipped:
            return "—"
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((item.get("line", item.get("index")), item.get("value") or "", item["error"]) for item in job.skipped),
        )
        return format_html("<table><thead><tr><th>line</th><th>value</th><th>error</th></tr></thead>"
                           "<tbody>{}</tbody></table>", rows)

    @admin.display(description="duration")
    def duration_display(self, job: Job) -> str:
        duration = job.duration
        if duration is None:
            return "—"
        seconds = round(duration.total_seconds())
        minutes, seconds = divmod(seconds, 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}:{minutes:02d}:{seconds:02d}"

    @admin.display(description="workers")
    def workers_display(self, job: Job) -> str:
        """Per worker: its live share's slots and lease, and the chunks (URL ranges) it claimed."""
        chunks = job.chunks.values("worker_id").annotate(
            count=Count("pk"), done=Count("pk", filter=Q(done=True)), claims=Sum("claims")
        )
        shares = {share.worker_id: share for share in job.shares.filter(lease_expires_at__gt=timezone.now())}
        rows = []
        for row in chunks.order_by("worker_id"):
            share = shares.pop(row["worker_id"], None)
            live = f"{share.slots} slots, lease until {share.lease_expires_at:%H:%M:%S}" if share else "-"
            rows.append((row["worker_id"] or "(none yet)", row["count"], row["done"], row["claims"], live))
        rows += [(worker_id, 0, 0, 0, f"{share.slots} slots") for worker_id, share in shares.items()]
        body = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
        return format_html(
            "<table><thead><tr><th>worker</th><th>chunks</th><th>done</th><th>claims</th><th>share now</th>"
            "</tr></thead><tbody>{}</tbody></table>", body,
        )  # fmt: skip

    @admin.display(description="results")
    def results_links(self, job: Job) -> str:
        links = [
            (_results_url(job), "All", job.total),
            (_results_url(job, outcome__exact=Result.Outcome.SUCCEEDED), "Succeeded", job.succeeded),
            (_results_url(job, outcome__exact=Result.Outcome.FAILED), "Failed", job.failed),
            (_results_url(job, outcome__exact=Result.Outcome.CANCELLED), "Cancelled", job.cancelled),
            (_results_url(job, outcome__exact=Result.Outcome.PENDING), "Pending", job.total - job.done),
        ]
        return format_html_join(" · ", '<a href="{}">{} ({})</a>', links)

    @admin.display(description=f"first {FAILURE_PREVIEW_ROWS} failures")
    def failure_preview(self, job: Job) -> str:
        failures = list(
            Result.objects.filter(job=job, outcome=Result.Outcome.FAILED)
            .order_by("position")
            .values_list("position", "url", "status_code", "error")[:FAILURE_PREVIEW_ROWS]
        )
        if not failures:
            return "—"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((position, url, "" if code is None else code, error) for position, url, code, error in failures),
        )
        return format_html(
            "<table><thead><tr><th>position</th><th>URL</th><th>status</th><th>error</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            rows,
        )

    # --- search ----------------------------------------------------------------------

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Job], search_term: str
    ) -> tuple[QuerySet[Job], bool]:
        """Name (Django's default), plus an exact job id or an exact URL the job holds.

        The URL match is an EXISTS subquery on Result, so a job matches once
        however many of its rows hold the URL and no rows are joined in.
        """
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        extra = Q()
        try:
            extra |= Q(pk=uuid.UUID(term))
        except ValueError:
            pass
        if term.lower().startswith(("http://", "https://")):
            extra |= Q(Exists(Result.objects.filter(job=OuterRef("pk"), url=term)))
        if extra:
            found = found | queryset.filter(extra)
        return found, may_have_duplicates

    # --- actions ---------------------------------------------------------------------

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        updated: list[Job] = []
        skipped = 0
        for job_id, status in queryset.values_list("pk", "status"):
            if status in Job.TERMINAL:
                skipped += 1
                continue
            # service.cancel = queue.request_cancel + an update to the owner's open pages.
            updated.append(service.cancel(job_id))
        cancelled = sum(job.status == Job.Status.CANCELLED for job in updated)
        stopping = sum(job.status == Job.Status.CANCELLING for job in updated)
        self.message_user(
            request,
            f"Cancelled {cancelled} queued job(s); asked {stopping} running job(s) to stop;"
            f" {skipped + len(updated) - cancelled - stopping} already finished.",
            messages.SUCCESS,
        )

    @admin.action(description="Re-run selected jobs (all URLs)")
    def rerun_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        reruns = (monitoring_links.rerun(job, failed_only=False, check_limits=False) for job in queryset.select_related("owner"))
        created = [job for job in reruns if job is not None]
        self.message_user(request, f"Queued {len(created)} new job(s).", messages.SUCCESS)

    @admin.action(description="Re-run failed URLs only")
    def rerun_failed_urls(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        created: list[Job] = []
        without_failures = 0
        for job in queryset.select_related("owner"):
            # service.rerun stores the new job, wakes the workers and updates the owner's dashboard.
            new_job = monitoring_links.rerun(job, failed_only=True, check_limits=False)
            if new_job is None:
                without_failures += 1
                continue
            created.append(new_job)
        level = messages.SUCCESS if created else messages.WARNING
        note = f" {without_failures} job(s) had no failed URLs." if without_failures else ""
        self.message_user(request, f"Queued {len(created)} new job(s).{note}", level)


@admin.register(Result)
class ResultAdmin(admin.ModelAdmin):
    """Results, reached from a job (filtered by job); read-only, paginated, no full-table count."""

    list_display = ("position_display", "url", "outcome", "status_code", "bytes", "elapsed_ms", "attempts",
                    "short_error", "fetched_at", "job_link")
    list_filter = ("outcome",)
    list_select_related = ("job",)
    search_fields = ("=url",)
    search_help_text = "An exact URL."
    list_per_page = 100
    # The unfiltered table may hold millions of rows: skip the second COUNT(*).
    show_full_result_count = False
    # job_id, not job: ordering by the relation would join Job for its default ordering.
    ordering = ("job_id", "position")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The worker writes results; counters on the job must keep matching them.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="position", ordering="position")
    def position_display(self, result: Result) -> int:
        """0-based, as on the live page, in the API and in the exports."""
        return result.position

    @admin.display(description="error")
    def short_error(self, result: Result) -> str:
        return result.error if len(result.error) <= 80 else result.error[:79] + "…"

    @admin.display(description="job")
    def job_link(self, result: Result) -> str:
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:jobs_job_change", args=[result.job_id]), result.job
        )
