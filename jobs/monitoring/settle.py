"""When a monitored job ends: compare it with the previous run, then queue its notifications.

Exactly once per job, by whichever worker gets there first: the worker takes
the job by setting its JobMonitor's `settled_at` with a conditional UPDATE, in
the same transaction as the Change rows and the Delivery rows, so a worker
killed half-way leaves nothing behind and the next one does it all again.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from jobs import conf, serializers
from jobs.models import Job
from jobs.monitoring import changes
from jobs.monitoring_models import Delivery, JobMonitor, NotifyOn

SETTLE_BATCH = 20
"""Finished jobs one pass settles at most."""


def settle_finished(*, limit: int = SETTLE_BATCH) -> list[JobMonitor]:
    """Settle monitored jobs that ended and were not settled yet; return those this call settled."""
    pending = list(
        JobMonitor.objects.filter(settled_at__isnull=True, job__status__in=Job.TERMINAL).values_list("pk", flat=True)[
            :limit
        ]
    )
    return [monitor for pk in pending if (monitor := _settle(pk)) is not None]


def _settle(job_id: Any) -> JobMonitor | None:
    with transaction.atomic():
        taken = JobMonitor.objects.filter(pk=job_id, settled_at__isnull=True).update(settled_at=timezone.now())
        if not taken:
            return None  # another worker settled it
        monitor = JobMonitor.objects.select_related("job", "previous", "schedule").get(pk=job_id)
        if monitor.previous is not None:
            monitor.change_counts = changes.compare(monitor.job, monitor.previous)
            monitor.save(update_fields=["change_counts"])
        queue_notifications(monitor)
        return monitor


def events_met(monitor: JobMonitor) -> list[str]:
    """Which of the monitor's notify_on the job met: finished (any end), failed (the job or a URL), changed."""
    job = monitor.job
    met = {
        NotifyOn.FINISHED: job.is_terminal,
        NotifyOn.FAILED: job.status == Job.Status.FAILED or job.failed > 0,
        NotifyOn.CHANGED: changes.changed(monitor.change_counts) > 0,
    }
    return [event for event in monitor.notify_on if met.get(event)]


def queue_notifications(monitor: JobMonitor) -> list[Delivery]:
    """One webhook and/or one email delivery when the job met one of the events asked for."""
    events = events_met(monitor)
    if not events:
        return []
    body = json.dumps(payload(monitor, events), separators=(",", ":"), sort_keys=True)
    deliveries = []
    for channel, target in ((Delivery.Channel.WEBHOOK, monitor.notify_url), (Delivery.Channel.EMAIL, monitor.notify_email)):
        if target:
            deliveries.append(
                Delivery.objects.create(job=monitor.job, channel=channel, target=target, events=events, body=body)
            )
    return deliveries


def payload(monitor: JobMonitor, events: list[str]) -> dict[str, Any]:
    """The JSON document a webhook receives (and an email summarises)."""
    job = monitor.job
    data = serializers.job_to_dict(job)
    return {
        "events": events,
        "job": {key: data[key] for key in ("id", "name", "status", "total", "succeeded", "failed", "cancelled",
                                           "error", "created_at", "started_at", "finished_at")},
        "url": site_url(reverse("job_detail", kwargs={"job_id": job.pk})),
        "schedule": monitor.schedule_id,
        "previous": str(monitor.previous_id) if monitor.previous_id else None,
        "changes": monitor.change_counts,
    }  # fmt: skip


def site_url(path: str) -> str:
    """An absolute link when MONITOR_SITE_URL is set (e.g. https://fetch.example.com), else the path."""
    return str(conf.get("MONITOR_SITE_URL")).rstrip("/") + path
