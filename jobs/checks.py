"""System checks for the app's settings (ids jobs.E001...)."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, register

from . import conf


@register()
def check_worker_timing(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    errors: list[Error] = []
    heartbeat = conf.get("WORKER_HEARTBEAT_SECONDS")
    lease = conf.get("WORKER_LEASE_SECONDS")
    if heartbeat <= 0 or lease <= 0:
        errors.append(Error("WORKER_HEARTBEAT_SECONDS and WORKER_LEASE_SECONDS must be positive.", id="jobs.E001"))
    elif heartbeat * 2 > lease:
        errors.append(
            Error(
                f"WORKER_LEASE_SECONDS ({lease}) must be at least twice WORKER_HEARTBEAT_SECONDS ({heartbeat}),"
                " or a live worker may lose its job to another between two heartbeats.",
                id="jobs.E002",
            )
        )
    if conf.get("JOBS_DEFAULT_CONCURRENCY") > conf.get("JOBS_MAX_CONCURRENCY"):
        errors.append(Error("JOBS_DEFAULT_CONCURRENCY exceeds JOBS_MAX_CONCURRENCY.", id="jobs.E003"))
    try:
        conf.fetch_guard()
    except ValueError as exc:
        errors.append(Error(f"FETCH_ALLOWED_NETWORKS / FETCH_DENIED_NETWORKS: {exc}", id="jobs.E004"))
    return errors
