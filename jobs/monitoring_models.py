"""Monitoring state: schedules and their ticks, a job's link to its list's previous run, changes, deliveries.

Kept beside jobs/models.py (which imports this module, so the models belong to the
`jobs` app) because they are one concern; the Job and Result tables are untouched:
what monitoring adds to a job lives in its `JobMonitor` row.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.timezone import now


class NotifyOn(models.TextChoices):
    FINISHED = "finished"  # any terminal status
    FAILED = "failed"  # the job failed, or some URL did
    CHANGED = "changed"  # some URL changed since the previous run


class Schedule(models.Model):
    """A URL list that runs as a new job at every tick of its cron expression or interval."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="schedules")
    name = models.CharField(max_length=200, blank=True)
    urls = models.JSONField(default=list, help_text="The normalised URLs, in order.")
    options = models.JSONField(default=dict, help_text="concurrency, timeout and the fetch options of its jobs.")
    cron = models.CharField(max_length=200, blank=True, help_text="A 5-field cron expression (or an interval).")
    interval = models.PositiveIntegerField(null=True, blank=True, help_text="Seconds between runs (or a cron).")
    timezone = models.CharField(max_length=64, default="UTC", help_text="The time zone the cron expression is in.")
    enabled = models.BooleanField(default=True)
    notify_url = models.TextField(blank=True, help_text="Webhook: POSTed a signed JSON document.")
    notify_on = models.JSONField(default=list, blank=True, help_text="Any of finished, failed, changed.")
    notify_email = models.EmailField(blank=True)
    next_run_at = models.DateTimeField(null=True, blank=True, help_text="The next due tick; null while disabled.")
    created_at = models.DateTimeField(default=now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["enabled", "next_run_at"]), models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return self.name or f"schedule {self.pk}"

    @property
    def every(self) -> str:
        """How often it runs, for people: the cron expression or "every N s"."""
        return f"{self.cron} ({self.timezone})" if self.cron else f"every {self.interval} s"


class ScheduleRun(models.Model):
    """One due tick of a schedule: the job it started, or why it was skipped."""

    class Status(models.TextChoices):
        STARTED = "started"
        SKIPPED = "skipped"  # the previous run was still going

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="runs")
    due_at = models.DateTimeField(help_text="The tick; 'run now' uses the moment it was asked.")
    created_at = models.DateTimeField(default=now)
    status = models.CharField(max_length=16, choices=Status.choices)
    job = models.OneToOneField(
        "jobs.Job", on_delete=models.SET_NULL, null=True, blank=True, related_name="schedule_run"
    )
    manual = models.BooleanField(default=False, help_text="Run now, not a tick.")
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-due_at", "-id"]
        # A second guard behind the conditional update of next_run_at: one row per tick.
        constraints = [models.UniqueConstraint(fields=["schedule", "due_at"], name="schedulerun_unique_tick")]

    def __str__(self) -> str:
        return f"{self.schedule} at {self.due_at:%Y-%m-%d %H:%M:%S} ({self.status})"


class JobMonitor(models.Model):
    """What monitoring knows about a job: its schedule, the previous run of its list, whom to notify.

    A job has this row only when one of them applies. `settled_at` is set, once,
    by the worker that computed the job's changes and queued its notifications.
    """

    job = models.OneToOneField("jobs.Job", on_delete=models.CASCADE, primary_key=True, related_name="monitor")
    schedule = models.ForeignKey(Schedule, on_delete=models.SET_NULL, null=True, blank=True, related_name="jobs")
    previous = models.ForeignKey(
        "jobs.Job", on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        help_text="The previous run of the same list, compared with this one.",
    )  # fmt: skip
    notify_url = models.TextField(blank=True)
    notify_on = models.JSONField(default=list, blank=True)
    notify_email = models.EmailField(blank=True)
    change_counts = models.JSONField(null=True, blank=True, help_text="Per kind, once computed.")
    settled_at = models.DateTimeField(null=True, blank=True, db_index=True)

    def __str__(self) -> str:
        return f"monitor of {self.job_id}"


class Change(models.Model):
    """One URL of a job compared with the same URL in the previous run of its list."""

    class Kind(models.TextChoices):
        NEW_FAILURE = "new_failure"
        RECOVERED = "recovered"
        STATUS_CHANGED = "status_changed"
        CONTENT_CHANGED = "content_changed"
        UNCHANGED = "unchanged"

    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="changes", db_index=False)
    position = models.PositiveIntegerField()
    url = models.TextField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    old_outcome = models.CharField(max_length=16)
    new_outcome = models.CharField(max_length=16)
    old_status = models.PositiveSmallIntegerField(null=True, blank=True)
    new_status = models.PositiveSmallIntegerField(null=True, blank=True)
    old_sha256 = models.CharField(max_length=64, blank=True)
    new_sha256 = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["job_id", "position"]
        constraints = [models.UniqueConstraint(fields=["job", "position"], name="change_unique_position")]
        indexes = [models.Index(fields=["job", "kind", "position"])]

    def __str__(self) -> str:
        return f"{self.url}: {self.kind}"


class WebhookSecret(models.Model):
    """A user's webhook signing key (HMAC-SHA256). Kept in clear: signing needs it; shown to the user once."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_secret")
    secret = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=now, editable=False)

    def __str__(self) -> str:
        return f"webhook secret of {self.user_id}"


class Delivery(models.Model):
    """One notification of a finished job: a webhook POST (retried) or an email."""

    class Channel(models.TextChoices):
        WEBHOOK = "webhook"
        EMAIL = "email"

    class Status(models.TextChoices):
        PENDING = "pending"  # due at next_attempt_at
        SENDING = "sending"  # a worker holds it until next_attempt_at (its lease)
        DELIVERED = "delivered"
        FAILED = "failed"  # gave up: 4xx, or still failing after an hour
        REFUSED = "refused"  # the SSRF guard refused the address; never sent

    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    target = models.TextField(help_text="The webhook URL or the email address.")
    events = models.JSONField(default=list, help_text="Which of notify_on this job met.")
    body = models.TextField(help_text="The JSON document sent.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=now)
    created_at = models.DateTimeField(default=now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.channel} to {self.target} ({self.status})"


class DeliveryAttempt(models.Model):
    """One try of a delivery: what the receiver answered, or what went wrong."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_rows")
    at = models.DateTimeField(default=now)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    elapsed_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["delivery_id", "at", "id"]

    def __str__(self) -> str:
        return f"{self.at:%H:%M:%S} {self.status_code or self.error}"
