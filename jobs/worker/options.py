"""From a Job row and the settings to the engine's `FetchOptions` (the Django side of jobs/engine/values.py)."""

from __future__ import annotations

from jobs import conf, requestdata
from jobs.engine.values import FetchOptions
from jobs.models import Job


def fetch_options(job: Job) -> FetchOptions:
    """The engine options of `job`: its own fields, plus the worker-wide retry settings.

    Unseals the job's secret headers into its request (crypto.SealBroken if no configured key opens them)."""
    return FetchOptions(
        timeout=job.timeout,
        retries=job.retries,
        retry_statuses=frozenset(int(code) for code in conf.get("FETCH_RETRY_STATUSES")),
        backoff_base=float(conf.get("FETCH_BACKOFF_BASE")),
        backoff_cap=float(conf.get("FETCH_BACKOFF_CAP")),
        retry_after_cap=float(conf.get("FETCH_RETRY_AFTER_CAP")),
        max_redirects=job.max_redirects,
        max_bytes=job.max_bytes,
        per_host=job.per_host,
        host_delay=job.host_delay,
        per_host_rate=job.per_host_rate,
        autothrottle=job.autothrottle,
        respect_robots=job.respect_robots,
        url_deadline=job.url_deadline,
        request=requestdata.job_spec(job),
        retry_unsafe=job.retry_unsafe,
    )
