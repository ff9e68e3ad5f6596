"""System checks for the app's settings (ids jobs.E001...)."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, register
from django.core.checks import Warning as CheckWarning
from django.utils.module_loading import import_string

from jobs import conf


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
    chunk = conf.get("WORKER_CHUNK_SIZE")
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        errors.append(Error(f"WORKER_CHUNK_SIZE must be a whole number of URLs >= 1, not {chunk!r}.", id="jobs.E007"))
    if conf.get("JOBS_DEFAULT_CONCURRENCY") > conf.get("JOBS_MAX_CONCURRENCY"):
        errors.append(Error("JOBS_DEFAULT_CONCURRENCY exceeds JOBS_MAX_CONCURRENCY.", id="jobs.E003"))
    statuses = conf.get("FETCH_RETRY_STATUSES")
    if not all(isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599 for code in statuses):
        errors.append(Error(f"FETCH_RETRY_STATUSES must be HTTP status codes (100-599), not {statuses!r}.", id="jobs.E005"))
    timings = {name: conf.get(name) for name in ("FETCH_BACKOFF_BASE", "FETCH_BACKOFF_CAP", "FETCH_RETRY_AFTER_CAP")}
    if not all(isinstance(value, (int, float)) and value >= 0 for value in timings.values()):
        errors.append(Error(f"FETCH_BACKOFF_BASE, FETCH_BACKOFF_CAP and FETCH_RETRY_AFTER_CAP must be seconds >= 0: "
                            f"{timings!r}.", id="jobs.E006"))  # fmt: skip
    try:
        conf.fetch_guard()
    except ValueError as exc:
        errors.append(Error(f"FETCH_ALLOWED_NETWORKS / FETCH_DENIED_NETWORKS: {exc}", id="jobs.E004"))
    return errors


@register()
def check_event_loop(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """The worker's event-loop settings (jobs/worker/eventloop.py) and the deadline bounds."""
    errors: list[Error] = []
    slow = conf.get("WORKER_SLOW_CALLBACK_SECONDS")
    if isinstance(slow, bool) or not isinstance(slow, (int, float)) or not 0 < slow <= 60:
        errors.append(Error(f"WORKER_SLOW_CALLBACK_SECONDS must be seconds above 0 (at most 60), not {slow!r}.",
                            id="jobs.E181"))  # fmt: skip
    hooks = conf.get("WORKER_STARTUP_HOOKS")
    if isinstance(hooks, str) or not isinstance(hooks, (list, tuple)):
        errors.append(Error(f"WORKER_STARTUP_HOOKS must be a list of dotted paths, not {hooks!r}.", id="jobs.E182"))
    else:
        for path in hooks:
            try:
                hook = import_string(path)
            except ImportError as exc:
                errors.append(Error(f"WORKER_STARTUP_HOOKS: cannot import {path!r} ({exc}).", id="jobs.E182"))
                continue
            if not callable(hook):
                errors.append(Error(f"WORKER_STARTUP_HOOKS: {path!r} is not callable.", id="jobs.E182"))
    bounds = {name: conf.get(name) for name in ("JOBS_MAX_URL_DEADLINE", "JOBS_MAX_JOB_DEADLINE")}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in bounds.values()):
        errors.append(Error(f"JOBS_MAX_URL_DEADLINE and JOBS_MAX_JOB_DEADLINE must be seconds above 0: {bounds!r}.",
                            id="jobs.E183"))  # fmt: skip
    return errors


# daphne's default --websocket_max_message_size; docker-compose and the Dockerfile pass it explicitly.
DAPHNE_MAX_MESSAGE_BYTES = 1024 * 1024


@register()
def check_limits(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """The abuse limits of jobs/submission/limits.py and the WebSocket message cap."""
    errors: list[Error] = []
    if conf.get("JOBS_MAX_QUEUED_PER_USER") < 0 or conf.get("JOBS_SUBMISSIONS_PER_MINUTE") < 1:
        errors.append(
            Error("JOBS_MAX_QUEUED_PER_USER must be >= 0 and JOBS_SUBMISSIONS_PER_MINUTE >= 1.", id="jobs.E004")
        )
    body = conf.get("JOBS_MAX_REQUEST_BODY_BYTES")
    if not isinstance(body, int) or isinstance(body, bool) or body < 0:
        errors.append(
            Error(f"JOBS_MAX_REQUEST_BODY_BYTES must be a whole number of bytes >= 0, not {body!r}.", id="jobs.E008")
        )
    if not 0 < conf.get("WS_MAX_MESSAGE_BYTES") < DAPHNE_MAX_MESSAGE_BYTES:
        errors.append(
            Error(
                f"WS_MAX_MESSAGE_BYTES must be positive and below daphne's message cap ({DAPHNE_MAX_MESSAGE_BYTES}),"
                " or oversize messages drop the connection instead of getting an error reply.",
                id="jobs.E005",
            )
        )
    return errors


METRICS_TOKEN_MIN_CHARS = 16


@register()
def check_operations(app_configs: Any = None, **kwargs: Any) -> list[Error | CheckWarning]:
    """JOBS_RETENTION_DAYS and METRICS_TOKEN (jobs/ops/)."""
    problems: list[Error | CheckWarning] = []
    days = conf.get("JOBS_RETENTION_DAYS")
    if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float)) or days <= 0):
        problems.append(Error(f"JOBS_RETENTION_DAYS must be a positive number of days (or unset), not {days!r}.",
                              id="jobs.E016"))  # fmt: skip
    token = conf.get("METRICS_TOKEN") or ""
    if token and len(token) < METRICS_TOKEN_MIN_CHARS:
        problems.append(CheckWarning(f"METRICS_TOKEN is shorter than {METRICS_TOKEN_MIN_CHARS} characters: easy to guess.",
                                id="jobs.W016"))  # fmt: skip
    return problems
