"""App settings with defaults, read lazily so `override_settings` works."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from jobs.engine.netguard import Guard, parse_networks

DEFAULTS: dict[str, Any] = {
    # Where people reach the pages: the CLI prints job pages under it (`make run`'s address by default).
    "JOBS_SITE_URL": "http://127.0.0.1:8000",
    # Submission limits
    "JOBS_MAX_URLS": 100_000,
    "JOBS_MAX_URL_LENGTH": 2048,
    # Largest body of one request (a job's or a line's json/body), UTF-8 bytes.
    "JOBS_MAX_REQUEST_BODY_BYTES": 64 * 1024,
    "JOBS_DEFAULT_CONCURRENCY": 10,
    "JOBS_MAX_CONCURRENCY": 1000,
    "JOBS_DEFAULT_TIMEOUT": 10.0,
    "JOBS_MAX_TIMEOUT": 300.0,
    # Upper bounds of the job options url_deadline and job_deadline, in seconds (README "Deadlines").
    "JOBS_MAX_URL_DEADLINE": 3600.0,
    "JOBS_MAX_JOB_DEADLINE": 7 * 24 * 3600.0,
    # Fetch options of a job: defaults and upper bounds (README "Job options").
    "JOBS_DEFAULT_PER_HOST": 8,
    "JOBS_MAX_HOST_DELAY": 60.0,
    "JOBS_DEFAULT_RETRIES": 2,
    "JOBS_MAX_RETRIES": 10,
    "JOBS_DEFAULT_MAX_REDIRECTS": 10,
    "JOBS_MAX_REDIRECTS": 30,
    "JOBS_DEFAULT_MAX_BYTES": 10 * 1024 * 1024,
    "JOBS_MAX_BYTES": 1024 * 1024 * 1024,
    # Retries: which statuses, and the backoff (full jitter) and Retry-After caps in seconds.
    "FETCH_RETRY_STATUSES": (408, 429, 500, 502, 503, 504),
    "FETCH_BACKOFF_BASE": 0.5,
    "FETCH_BACKOFF_CAP": 30.0,
    "FETCH_RETRY_AFTER_CAP": 60.0,
    # Abuse limits (jobs/submission/limits.py)
    "JOBS_MAX_QUEUED_PER_USER": 50,
    "JOBS_SUBMISSIONS_PER_MINUTE": 30,
    # Under daphne's hard cap (--websocket_max_message_size, 1 MiB by default), so an oversize
    # message gets an error reply before daphne would drop the connection.
    "WS_MAX_MESSAGE_BYTES": 512 * 1024,
    # Worker
    "WORKER_HEARTBEAT_SECONDS": 10.0,
    "WORKER_LEASE_SECONDS": 30.0,
    "WORKER_POLL_SECONDS": 1.0,
    "WORKER_MAX_CLAIMS": 5,
    # URLs per chunk: the unit a worker claims, so several workers can share one job.
    "WORKER_CHUNK_SIZE": 500,
    # The worker's event loop (jobs/worker/eventloop.py): asyncio debug mode (also at `runworker -v 3`), the
    # slow-callback threshold it logs above, and dotted paths of callables run on the loop at startup.
    "WORKER_ASYNCIO_DEBUG": False,
    "WORKER_SLOW_CALLBACK_SECONDS": 0.1,
    "WORKER_STARTUP_HOOKS": (),
    # Progress: at most this many messages per second per job.
    "PROGRESS_MAX_RATE": 10.0,
    # SSRF guard switch (development and tests lift it).
    "FETCH_ALLOW_PRIVATE_ADDRESSES": False,
    # Networks (CIDR strings) always allowed / always refused by the SSRF guard.
    "FETCH_ALLOWED_NETWORKS": (),
    "FETCH_DENIED_NETWORKS": (),
    # Operations (jobs/ops/): the web's /metrics bearer token ("" turns it off); days finished jobs are kept.
    "METRICS_TOKEN": "",
    "JOBS_RETENTION_DAYS": None,
    # Per-host caps, rates and autothrottle held across all workers through Redis (jobs/engine/fleetslots.py);
    # off: each worker applies them on its own.
    "FETCH_SHARED_HOST_SLOTS": True,
    # Monitoring (jobs/monitoring/): links in notifications, webhook timeout and retries (seconds).
    "MONITOR_SITE_URL": "",
    "MONITOR_WEBHOOK_TIMEOUT": 10.0,
    "MONITOR_WEBHOOK_BACKOFF": 10.0,
    "MONITOR_WEBHOOK_BACKOFF_CAP": 600.0,
    "MONITOR_WEBHOOK_GIVE_UP": 3600.0,
}


def get(name: str) -> Any:
    """Return setting `name` from Django settings, else its default."""
    return getattr(settings, name, DEFAULTS[name])


def fetch_guard() -> Guard:
    """The SSRF guard the settings describe (ValueError for a malformed network; checks.py reports it)."""
    return Guard(
        allow_private=bool(get("FETCH_ALLOW_PRIVATE_ADDRESSES")),
        allow=_networks(get("FETCH_ALLOWED_NETWORKS")),
        deny=_networks(get("FETCH_DENIED_NETWORKS")),
    )


def _networks(value: Any) -> tuple[Any, ...]:
    """A CIDR list setting: a comma-separated string or a list of strings."""
    return parse_networks(value if isinstance(value, str) else ",".join(value))
