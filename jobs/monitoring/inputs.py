"""Validating what a schedule (and a job's notifications) may be given: cron or interval, time zone, notify_*.

The URL list, name and job options go through jobs/submission/validation.py,
the same rules as a job's; this module adds the monitoring fields and reports
every problem at once as `SubmissionError` (a 400 naming each field and why).
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cronsim import CronSim, CronSimError
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from jobs.monitoring_models import NotifyOn
from jobs.exceptions import SubmissionError
from jobs.submission import validation
from jobs.submission.urls import url_problem

NOTIFY_FIELDS = ("notify_url", "notify_on", "notify_email")
SCHEDULE_FIELDS = ("cron", "interval", "timezone", "enabled", *NOTIFY_FIELDS)
# An interval must fit the PositiveIntegerField on every database (SQLite and PostgreSQL: 2**31 - 1).
MAX_INTERVAL = 2**31 - 1
CRON_MAX_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Notify:
    """Whom a finished job tells, and when."""

    url: str = ""
    on: tuple[str, ...] = ()
    email: str = ""

    def as_fields(self) -> dict[str, Any]:
        return {"notify_url": self.url, "notify_on": list(self.on), "notify_email": self.email}

    def __bool__(self) -> bool:
        return bool(self.on and (self.url or self.email))


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A validated schedule: its job request (URLs, name, options), when it runs, whom it tells."""

    job: validation.JobRequest
    cron: str
    interval: int | None
    timezone: str
    enabled: bool
    notify: Notify = field(default_factory=Notify)

    def options(self) -> dict[str, Any]:
        """What Schedule.options stores: concurrency, timeout and the fetch options."""
        return {"concurrency": self.job.concurrency, "timeout": self.job.timeout, **self.job.options}


def clean_notify(data: Mapping[str, Any], errors: dict[str, Any]) -> Notify:
    """The notify_* fields of `data` (absent: none); problems go into `errors` under the field's name."""
    url = data.get("notify_url") or ""
    if not isinstance(url, str):
        errors["notify_url"] = "must be a string (an http or https URL)"
        url = ""
    elif url:
        url = url.strip()
        problem = url_problem(url)
        if problem:
            errors["notify_url"] = f"not a webhook URL: {problem}"
    on = data.get("notify_on")
    events: tuple[str, ...] = ()
    if on is None:
        events = (NotifyOn.FINISHED,) if url or data.get("notify_email") else ()
    elif isinstance(on, str):
        events = tuple(item.strip() for item in on.split(",") if item.strip())
    elif isinstance(on, (list, tuple)) and all(isinstance(item, str) for item in on):
        events = tuple(on)
    else:
        errors["notify_on"] = f"must be a list of {', '.join(NotifyOn.values)}"
    unknown = [item for item in events if item not in NotifyOn.values]
    if unknown:
        errors["notify_on"] = f"unknown event {', '.join(map(repr, unknown))} (expected {', '.join(NotifyOn.values)})"
    email = data.get("notify_email") or ""
    if not isinstance(email, str):
        errors["notify_email"] = "must be a string (an email address)"
        email = ""
    elif email:
        email = email.strip()
        try:
            validate_email(email)
        except ValidationError:
            errors["notify_email"] = "not a valid email address"
    return Notify(url=url, on=tuple(dict.fromkeys(events)), email=email)


def clean_cron(value: Any, tz: zoneinfo.ZoneInfo) -> str:
    """A cron expression cronsim accepts; ValueError says why not."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a cron expression such as '*/5 * * * *'")
    expression = " ".join(value.split())
    if len(expression) > CRON_MAX_LENGTH:
        raise ValueError(f"must be at most {CRON_MAX_LENGTH} characters")
    try:
        next(CronSim(expression, datetime.now(UTC).astimezone(tz)))
    except CronSimError as exc:
        raise ValueError(f"invalid cron expression {expression!r}: {exc}") from exc
    except StopIteration:
        raise ValueError(f"cron expression {expression!r} never matches") from None
    return expression


def clean_interval(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("must be a whole number of seconds, at least 1")
    try:
        seconds = int(value)
    except ValueError:
        raise ValueError("must be a whole number of seconds, at least 1") from None
    if seconds < 1:
        raise ValueError(f"must be at least 1 second, not {seconds}")
    if seconds > MAX_INTERVAL:
        raise ValueError(f"must be at most {MAX_INTERVAL} seconds")
    return seconds


def clean_timezone(value: Any) -> zoneinfo.ZoneInfo:
    if value is None or value == "":
        return zoneinfo.ZoneInfo("UTC")
    if not isinstance(value, str):
        raise ValueError("must be an IANA time zone name such as 'Europe/Berlin'")
    try:
        return zoneinfo.ZoneInfo(value.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (an IANA name such as 'Europe/Berlin')") from None


def validate_schedule(data: Any) -> ScheduleSpec:
    """Check a whole schedule (POST, or a PATCH merged onto the stored one); SubmissionError names every problem."""
    if not isinstance(data, Mapping):
        raise SubmissionError({"body": "must be a JSON object with 'urls' and a 'cron' or an 'interval'"})
    errors: dict[str, Any] = {}
    job_data = {key: value for key, value in data.items() if key not in SCHEDULE_FIELDS}
    job_request = None
    try:
        job_request = validation.validate_submission(job_data)
    except SubmissionError as exc:
        errors.update(exc.errors)
    for key in list(errors):
        if key in job_data and key not in validation.FIELDS:
            errors[key] = f"unknown field (expected {', '.join((*validation.FIELDS, *SCHEDULE_FIELDS))})"
    tz = zoneinfo.ZoneInfo("UTC")
    try:
        tz = clean_timezone(data.get("timezone"))
    except ValueError as exc:
        errors["timezone"] = str(exc)
    cron, interval = _clean_when(data, tz, errors)
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        errors["enabled"] = "must be true or false"
    notify = clean_notify(data, errors)
    if errors:
        raise SubmissionError(errors)
    assert job_request is not None
    return ScheduleSpec(
        job=job_request, cron=cron, interval=interval, timezone=tz.key, enabled=enabled, notify=notify
    )


def _clean_when(data: Mapping[str, Any], tz: zoneinfo.ZoneInfo, errors: dict[str, Any]) -> tuple[str, int | None]:
    has_cron = data.get("cron") not in (None, "")
    has_interval = data.get("interval") not in (None, "")
    if has_cron and has_interval:
        errors["cron"] = "give either a cron expression or an interval in seconds, not both"
        return "", None
    if not has_cron and not has_interval:
        errors["cron"] = errors["interval"] = "required: a cron expression or an interval in seconds"
        return "", None
    try:
        if has_cron:
            return clean_cron(data["cron"], tz), None
        return "", clean_interval(data["interval"])
    except ValueError as exc:
        errors["cron" if has_cron else "interval"] = str(exc)
        return "", None
