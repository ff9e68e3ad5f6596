"""Plain-dict views of jobs and results, shared by the API, the WebSocket
consumers and the worker's progress messages (one wire format everywhere)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobs import requestdata
from jobs.models import Job, Result

if TYPE_CHECKING:
    from jobs.queue.resultwrite import FinalRow

JOB_FIELDS = (
    "name", "status", "concurrency", "timeout", "per_host", "host_delay", "retries", "max_redirects", "max_bytes",
    "respect_robots", "save_bodies", "url_deadline", "job_deadline", "duplicate_urls", "skipped_urls", "total", "succeeded", "failed", "cancelled", "error",
    "per_host_rate", "autothrottle",
)  # fmt: skip
RESULT_FIELDS = (
    "position", "url", "outcome", "status_code", "bytes", "elapsed_ms", "attempts", "error", "error_class",
    "final_url", "content_type", "sha256", "redirects",
)  # fmt: skip


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def job_to_dict(job: Job) -> dict[str, Any]:
    data: dict[str, Any] = {"id": str(job.id)}
    data.update({field: getattr(job, field) for field in JOB_FIELDS})
    data["retry_unsafe"] = job.retry_unsafe
    # What the job's lines send: secret header values as •••, the body only by its size and hash.
    data["request"] = requestdata.request_summary(job.method, job.request_headers, job.request_body)
    data["line_requests"] = job.line_requests
    data["done"] = job.done
    data["created_at"] = _iso(job.created_at)
    data["started_at"] = _iso(job.started_at)
    data["finished_at"] = _iso(job.finished_at)
    data["deadline_at"] = _iso(job.deadline_at)
    return data


def job_detail_to_dict(job: Job) -> dict[str, Any]:
    """`job_to_dict` plus the skipped lines (up to 1000), for the answer to a submission.

    Not in the job's other views: those are the same dict everywhere (API, WebSocket, progress
    messages, which would otherwise carry the list ten times a second).
    """
    return {**job_to_dict(job), "skipped": job.skipped}


def result_to_dict(result: Result | FinalRow) -> dict[str, Any]:
    data = {field: getattr(result, field) for field in RESULT_FIELDS}
    data["fetched_at"] = _iso(result.fetched_at)
    return data
