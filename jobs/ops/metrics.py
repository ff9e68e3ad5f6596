"""Prometheus metrics (prometheus_client): the worker's own, and the queue's state for the web's /metrics.

Two sets, scraped from different places:

* Worker metrics live in prometheus_client's default registry of the worker
  process, which `runworker --metrics-port N` serves (each worker process its
  own endpoint and registry; nothing is shared between processes). Counters
  and histograms are updated where the worker records a batch of results
  (`observe_recorded`: once per batch, a few microseconds per URL), the gauges
  are read from the running worker when scraped (`WorkerGauges`), so the hot
  path pays nothing for them.
* Queue metrics (`queue_registry`) are computed from the database when the
  web's /metrics is scraped: jobs by status, pending URLs, the age of the
  oldest queued job. They hold no per-process state, so any of several daphne
  processes answers the same and PROMETHEUS_MULTIPROC_DIR is not needed.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from django.db.models import Count, F, Min, Sum
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jobs.models import Job
from jobs.monitoring_models import Delivery

if TYPE_CHECKING:
    from jobs.queue.resultwrite import FinalRow

FETCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Seconds: a loopback hit to a timed-out URL with retries."""
DB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_HOST_SERIES = 50
"""Hosts shown in batchfetch_host_requests_in_flight at most (the busiest): labels stay bounded."""

# --- worker: counters and histograms -------------------------------------------------------

URLS_FETCHED = Counter(
    "batchfetch_urls_fetched", "URLs fetched and recorded, by outcome and error class ('' when none).",
    ["outcome", "error_class"],
)  # fmt: skip
FETCH_DURATION = Histogram(
    "batchfetch_fetch_duration_seconds", "Wall time of one URL's fetch (its elapsed_ms), retries included.",
    buckets=FETCH_BUCKETS,
)  # fmt: skip
RETRIES = Counter("batchfetch_fetch_retries", "Further attempts made after a retryable failure.")
CLAIMS_LOST = Counter(
    "batchfetch_claims_lost", "Shares of a job this worker lost: its lease expired or its URLs were taken over."
)
DB_WRITE_DURATION = Histogram(
    "batchfetch_db_write_seconds", "Time to record one batch of results (one transaction).",
    buckets=DB_BUCKETS,
)  # fmt: skip
PROGRESS_SENT = Counter(
    "batchfetch_progress_messages_sent", "Channel-layer messages handed to the layer, by kind.", ["kind"]
)
PROGRESS_DROPPED = Counter(
    "batchfetch_progress_messages_dropped",
    "Channel-layer messages not sent because the layer (Redis) was unreachable, by kind.", ["kind"],
)  # fmt: skip
PURGED = Counter("batchfetch_purged", "What the retention purge removed, by kind (jobs, results, bodies).", ["kind"])
NOTIFICATION_ATTEMPTS = Counter(
    "batchfetch_notification_attempts",
    "Webhook and email sends, by channel and what followed (delivered, retry, failed, refused).",
    ["channel", "result"],
)  # fmt: skip

_fetched_children: dict[tuple[str, str], Any] = {}


def observe_recorded(rows: Iterable[FinalRow]) -> None:
    """Count a recorded batch: URLs by outcome and error class, their fetch time, their retries."""
    tally: Tally[tuple[str, str]] = Tally()
    retries = 0
    observe = FETCH_DURATION.observe
    for row in rows:
        tally[row.outcome, row.error_class] += 1
        if row.elapsed_ms is not None:
            observe(row.elapsed_ms / 1000)
        if row.attempts > 1:
            retries += row.attempts - 1
    for key, count in tally.items():
        child = _fetched_children.get(key)
        if child is None:
            child = _fetched_children[key] = URLS_FETCHED.labels(*key)
        child.inc(count)
    if retries:
        RETRIES.inc(retries)


def count_message(kind: str, *, sent: bool) -> None:
    """One channel-layer message of `kind` (progress, update, wakeup), sent or dropped."""
    (PROGRESS_SENT if sent else PROGRESS_DROPPED).labels(kind).inc()


# --- worker: gauges read at scrape time --------------------------------------------------------


class WorkerState(Protocol):
    """What a running worker tells the gauges (read from the scrape thread: plain reads, no locks)."""

    def requests_in_flight(self) -> int: ...

    def host_requests_in_flight(self) -> Mapping[str, int]: ...

    def jobs_running(self) -> int: ...


class WorkerGauges(Collector):
    """Gauges of the workers running in this process (one in production; tests may run several)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workers: list[WorkerState] = []

    def add(self, worker: WorkerState) -> None:
        with self._lock:
            self._workers.append(worker)

    def remove(self, worker: WorkerState) -> None:
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            workers = list(self._workers)
        yield _gauge("batchfetch_requests_in_flight", "Requests of this worker in flight.",
                     sum(worker.requests_in_flight() for worker in workers))  # fmt: skip
        yield _gauge("batchfetch_worker_jobs_running", "Jobs this worker runs now.",
                     sum(worker.jobs_running() for worker in workers))  # fmt: skip
        hosts: Tally[str] = Tally()
        for worker in workers:
            hosts.update(worker.host_requests_in_flight())
        family = GaugeMetricFamily(
            "batchfetch_host_requests_in_flight",
            f"Requests in flight (or waiting for a worker slot) per host, the {MAX_HOST_SERIES} busiest.",
            labels=["host"],
        )
        for host, count in hosts.most_common(MAX_HOST_SERIES):
            family.add_metric([host], count)
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names are fixed, but describing would make the registry call collect() at register


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


worker_gauges = WorkerGauges()
REGISTRY.register(worker_gauges)

# --- web: the queue's state, from the database ---------------------------------------------------


class QueueCollector(Collector):
    """Jobs by status, pending URLs, the oldest queued job's age, notifications by status: cheap aggregates."""

    def collect(self) -> Iterator[Metric]:
        counts = dict(Job.objects.order_by().values("status").annotate(n=Count("pk")).values_list("status", "n"))
        jobs = GaugeMetricFamily("batchfetch_jobs", "Jobs by status.", labels=["status"])
        for status in Job.Status.values:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        unfinished = Job.objects.exclude(status__in=Job.TERMINAL).order_by()
        pending = unfinished.aggregate(
            n=Sum(F("total") - F("succeeded") - F("failed") - F("cancelled"))
        )["n"]
        yield _gauge("batchfetch_queue_pending_urls", "URLs of unfinished jobs without a final result.", pending or 0)
        oldest = unfinished.filter(status=Job.Status.QUEUED).aggregate(at=Min("created_at"))["at"]
        age = (timezone.now() - oldest).total_seconds() if oldest is not None else 0.0
        yield _gauge("batchfetch_queue_oldest_queued_seconds", "Age of the oldest queued job (0: none).", age)
        yield _notifications()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no query when the registry is built


def _notifications() -> GaugeMetricFamily:
    rows = Delivery.objects.order_by().values("channel", "status").annotate(n=Count("pk"))
    counts = {(row["channel"], row["status"]): row["n"] for row in rows}
    family = GaugeMetricFamily(
        "batchfetch_notifications", "Notifications (webhooks, emails) by channel and status.", labels=["channel", "status"]
    )
    for channel in Delivery.Channel.values:
        for status in Delivery.Status.values:
            family.add_metric([channel, status], counts.get((channel, status), 0))
    return family


def queue_registry() -> CollectorRegistry:
    """A registry holding only the queue's state (the web's /metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector())
    return registry

