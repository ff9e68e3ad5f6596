"""Jobs and their per-URL results: the durable state of the system.

The database is the source of truth and the queue (`queue.py`). Every URL has
exactly one `Result` row, created `pending` at submission and turned final once
by the worker that holds it. A job's rows are cut into `Chunk`s of positions; a
worker takes part in a job through a `Share` (a claim token, a lease, and its
slots of the job's concurrency) and claims chunks under it, so several workers
can share one large job while its concurrency holds overall. A job's counters
are updated in the same transaction as its rows, so they always equal what the
rows say.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


class Job(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        CANCELLING = "cancelling"
        PAUSING = "pausing"  # the worker lets in-flight requests finish, then releases the job
        PAUSED = "paused"  # held by no worker until resumed (then queued again)
        COMPLETED = "completed"
        CANCELLED = "cancelled"
        FAILED = "failed"

    TERMINAL = frozenset({Status.COMPLETED, Status.CANCELLED, Status.FAILED})

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    name = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    concurrency = models.PositiveIntegerField(help_text="Most requests of this job in flight at once.")
    timeout = models.FloatField(help_text="Per-URL deadline in seconds.")
    # Fetch options (see README "Job options"); validated by submission.py.
    per_host = models.PositiveIntegerField(default=8, help_text="Most requests to one host in flight at once.")
    host_delay = models.FloatField(default=0.0, help_text="Seconds between two requests to one host.")
    per_host_rate = models.FloatField(
        null=True, blank=True, help_text="Requests per second to one host over all workers (empty: no rate)."
    )
    autothrottle = models.BooleanField(
        default=False, help_text="Adapt the per-host concurrency to the host's latency and 429/503 answers."
    )
    retries = models.PositiveSmallIntegerField(default=2, help_text="Retries of a URL after a retryable failure.")
    max_redirects = models.PositiveSmallIntegerField(default=10, help_text="Redirect hops followed at most.")
    max_bytes = models.BigIntegerField(default=10 * 1024 * 1024, help_text="Largest body (decoded) in bytes.")
    respect_robots = models.BooleanField(default=False, help_text="Skip URLs that robots.txt disallows.")
    save_bodies = models.BooleanField(default=False, help_text="Keep the response bodies.")
    # Deadlines (README "Deadlines", jobs/queue/deadlines.py); empty: none.
    url_deadline = models.FloatField(
        null=True, blank=True, help_text="Seconds one URL may take over all its attempts and waits (empty: no limit)."
    )
    job_deadline = models.FloatField(
        null=True, blank=True, help_text="Seconds the job may run from its start (empty: no limit)."
    )
    deadline_at = models.DateTimeField(
        null=True, blank=True, help_text="When the job deadline passes (set when the job starts)."
    )
    # The request each line sends unless it overrides it (README "Requests"); jobs/submission/requests.py.
    method = models.CharField(max_length=8, default="GET", help_text="HTTP method of the job's requests.")
    request_headers = models.JSONField(
        default=list, blank=True, help_text="Request headers as [name, value] pairs; a secret one's value is null."
    )
    sealed_headers = models.TextField(
        blank=True, editable=False, help_text="The secret headers' values, encrypted (jobs/crypto.py)."
    )
    request_body = models.TextField(null=True, blank=True, help_text="The request body, if any.")
    retry_unsafe = models.BooleanField(default=False, help_text="Retry POST and PATCH requests too.")
    line_requests = models.BooleanField(default=False, help_text="Some lines override the request (RequestLine).")
    duplicate_urls = models.PositiveIntegerField(
        default=0, help_text="Submitted URLs that repeat an earlier one (kept: one row per submitted URL)."
    )
    # "Skip invalid lines" (README "Submitted URLs"): what was left out, and why.
    skipped = models.JSONField(
        default=list, blank=True,
        help_text="Lines left out by 'skip invalid lines': [{index, line?, value, error}], at most 1000.",
    )
    skipped_urls = models.PositiveIntegerField(
        default=0, help_text="Submitted URLs left out as invalid (skip invalid lines); all are counted."
    )

    # Counters, kept equal to the Result rows by queue.record_results().
    total = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    cancelled = models.PositiveIntegerField(default=0)

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="Why the job failed, if it did.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"]), models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return self.name or str(self.id)

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def duration(self) -> timedelta | None:
        if self.started_at is None:
            return None
        return (self.finished_at or timezone.now()) - self.started_at


class ResultManager(models.Manager["Result"]):
    """Leaves `headers` out of every query unless asked for (`.defer(None)`): lists, exports and progress
    read thousands of rows and never show them, and each would cost a JSON decode."""

    def get_queryset(self) -> models.QuerySet[Result]:
        return super().get_queryset().defer("headers")


class Result(models.Model):
    class Outcome(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"  # an HTTP response with status < 400
        FAILED = "failed"  # network error, timeout, or status >= 400
        CANCELLED = "cancelled"  # never fetched: the job was cancelled or failed first

    # No separate FK index: unique(job, position) already starts with job_id.
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="results", db_index=False)
    position = models.PositiveIntegerField(help_text="0-based index in the submitted list.")
    url = models.TextField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.PENDING)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    bytes = models.BigIntegerField(null=True, blank=True)
    elapsed_ms = models.PositiveIntegerField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    error_class = models.CharField(max_length=32, blank=True, help_text="timeout, connect, dns, blocked, ...")
    final_url = models.TextField(blank=True, help_text="The URL after redirects.")
    content_type = models.CharField(max_length=200, blank=True)
    sha256 = models.CharField(max_length=64, blank=True, help_text="Of the decoded body, when read completely.")
    redirects = models.PositiveSmallIntegerField(default=0)
    body = models.CharField(max_length=500, blank=True, help_text="Storage name of the saved body, if kept.")
    fetched_at = models.DateTimeField(null=True, blank=True)
    headers = models.JSONField(
        null=True, blank=True, help_text="The last response's headers, [name, value] pairs (Set-Cookie •••)."
    )

    objects = ResultManager()

    class Meta:
        ordering = ["job_id", "position"]
        constraints = [models.UniqueConstraint(fields=["job", "position"], name="result_unique_position")]
        indexes = [models.Index(fields=["job", "outcome"]), models.Index(fields=["job", "-fetched_at"])]

    def __str__(self) -> str:
        return f"{self.url} ({self.outcome})"

    def response_headers(self) -> list[list[str]]:
        """The headers kept, as [name, value] pairs; for a row written before they were kept, its Content-Type."""
        if self.headers is not None:
            return self.headers
        return [["Content-Type", self.content_type]] if self.content_type else []


class RequestLine(models.Model):
    """What one line of a job overrides of the job's request; only lines with an override have one."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="request_lines", db_index=False)
    position = models.PositiveIntegerField()
    method = models.CharField(max_length=8, blank=True, help_text="Empty: the job's method.")
    headers = models.JSONField(null=True, blank=True, help_text="[name, value] pairs replacing the job's of that name.")
    sealed_headers = models.TextField(blank=True, editable=False, help_text="The secret headers' values, encrypted.")
    body = models.TextField(null=True, blank=True, help_text="Null: the job's body.")

    class Meta:
        ordering = ["job_id", "position"]
        constraints = [models.UniqueConstraint(fields=["job", "position"], name="requestline_unique_position")]

    def __str__(self) -> str:
        return f"{self.position}: {self.method or '(job method)'}"


class Share(models.Model):
    """One worker's part in a started job: its claim token, its lease, and its slots.

    A worker writes results only under a live share (fencing: a share whose
    lease expired is lost, even if nobody took its chunks yet). The slots of a
    job's live shares add up to at most the job's concurrency; workers rebalance
    them as shares come and go (queue.check_share).
    """

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="shares")
    worker_id = models.CharField(max_length=200)
    token = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    lease_expires_at = models.DateTimeField()
    slots = models.PositiveIntegerField(help_text="Requests of the job this worker may have in flight.")
    joined_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["job", "lease_expires_at"])]

    def __str__(self) -> str:
        return f"{self.worker_id} ({self.slots} slots)"


class Chunk(models.Model):
    """Positions [start, end) of a job, claimed by one share at a time."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="chunks", db_index=False)
    start = models.PositiveIntegerField()
    end = models.PositiveIntegerField()
    share = models.ForeignKey(Share, on_delete=models.SET_NULL, null=True, blank=True, related_name="chunks")
    worker_id = models.CharField(max_length=200, blank=True, help_text="The worker that claimed it last.")
    claims = models.PositiveIntegerField(
        default=0, help_text="Claims that did not end in a clean hand-back; too many marks the job failed (poison)."
    )
    done = models.BooleanField(default=False, help_text="No pending row left.")

    class Meta:
        ordering = ["job_id", "start"]
        constraints = [models.UniqueConstraint(fields=["job", "start"], name="chunk_unique_start")]
        indexes = [models.Index(fields=["job", "done"])]

    def __str__(self) -> str:
        return f"{self.start}-{self.end - 1}"


class ApiToken(models.Model):
    """A user's secret for scripts and the CLI (`Authorization: Bearer <token>`).

    Only the SHA-256 digest of the token is stored: the token itself is shown
    once, when it is created (jobs/web/tokens.py). `prefix` (its first characters)
    tells tokens apart in lists without revealing them.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, help_text="What the token is for, e.g. 'nightly cron'.")
    prefix = models.CharField(max_length=16, editable=False, help_text="The token's first characters.")
    digest = models.CharField(max_length=64, unique=True, editable=False, help_text="SHA-256 of the token, hex.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… {self.name}".strip()

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


# Monitoring's models (schedules, changes, deliveries) live with their concern; importing them here makes
# them part of the `jobs` app.
from jobs.monitoring_models import (  # noqa: E402, F401
    Change,
    Delivery,
    DeliveryAttempt,
    JobMonitor,
    Schedule,
    ScheduleRun,
    WebhookSecret,
)
