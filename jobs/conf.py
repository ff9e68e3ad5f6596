"""App settings with defaults, read lazily so `override_settings` works."""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Submission limits
    "JOBS_MAX_URLS": 100_000,
    "JOBS_MAX_URL_LENGTH": 2048,
    "JOBS_DEFAULT_CONCURRENCY": 10,
    "JOBS_MAX_CONCURRENCY": 1000,
    "JOBS_DEFAULT_TIMEOUT": 10.0,
    "JOBS_MAX_TIMEOUT": 300.0,
    # Abuse limits (jobs/limits.py)
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
    # Progress: at most this many messages per second per job.
    "PROGRESS_MAX_RATE": 10.0,
    # SSRF guard switch (development and tests lift it).
    "FETCH_ALLOW_PRIVATE_ADDRESSES": False,
}


def get(name: str) -> Any:
    """Return setting `name` from Django settings, else its default."""
    return getattr(settings, name, DEFAULTS[name])
