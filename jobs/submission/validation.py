"""Validating a submission: every field checked and cleaned into a `JobRequest`, every problem reported at once.

One place for the rules, shared by the JSON API, the WebSocket submit, the HTML
form and the CLI. Validation never touches the database and reports every
problem at once, each bad URL by its index (and its source line when the URLs
came from pasted text or an uploaded file), so a 400 names what to fix.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async

from jobs import conf
from jobs.exceptions import SubmissionError
from jobs.models import Job
from jobs.requestdata import LineRecord
from jobs.submission import requests
from jobs.submission.parsing import UrlLines
from jobs.submission.urls import _check_url, _normalised, _shorten

OPTION_FIELDS = (
    "per_host", "host_delay", "retries", "max_redirects", "max_bytes", "respect_robots", "save_bodies",
    "url_deadline", "job_deadline", "per_host_rate", "autothrottle",
)  # fmt: skip
PER_HOST_RATE_RANGE = (0.01, 1000.0)
"""Requests per second to one host a job may ask for (README "Politeness across workers")."""
FIELDS = ("urls", "requests", "name", "concurrency", "timeout", *OPTION_FIELDS, *requests.JOB_FIELDS, "skip_invalid")
NAME_MAX_LENGTH: int = Job._meta.get_field("name").max_length  # type: ignore[assignment]
# A 100k-line paste full of garbage must not produce a 10 MB error response.
MAX_REPORTED_URL_ERRORS = 1000

_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A validated submission, ready for `submit()`."""

    urls: tuple[str, ...]
    """Absolute http(s) URLs in submission order, normalised (`normalise_url`); duplicates are kept."""
    name: str
    """Display name, possibly empty."""
    concurrency: int
    """Most requests of the job in flight at once."""
    timeout: float
    """Per-URL deadline in seconds."""
    options: dict[str, Any] = field(default_factory=dict)
    """The fetch options (per_host, host_delay, retries, max_redirects, max_bytes, respect_robots,
    save_bodies, url_deadline, job_deadline, per_host_rate, autothrottle), all present after validation
    (a deadline or the rate may be None: none)."""
    duplicates: int = 0
    """URLs that repeat an earlier one of the list (after normalisation); they are kept, and reported."""
    request: dict[str, Any] = field(default_factory=dict)
    """The Job fields of the job's request (method, request_headers, sealed_headers, request_body,
    retry_unsafe); empty: a plain GET."""
    lines: tuple[LineRecord, ...] = ()
    """The overrides of the lines that have one (submitted as `requests`)."""
    skipped: tuple[dict[str, Any], ...] = ()
    """With `skip_invalid`: the URL errors left out (`index`, `line`?, `value`, `error`), at most
    MAX_REPORTED_URL_ERRORS of them; `skipped_urls` counts them all."""
    skipped_urls: int = 0


def _url_errors(value: Any) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """Check the `urls` field; return (error items, the URLs)."""
    if value is None:
        return [{"error": "required: a non-empty list of URLs"}], ()
    if not isinstance(value, (list, tuple)):
        return [{"error": f"must be a list of URLs, not {_json_type(value)}"}], ()
    if not value:
        return [{"error": "must not be empty"}], ()
    max_urls = conf.get("JOBS_MAX_URLS")
    if len(value) > max_urls:
        # Checking a few million rejected items one by one would only waste time.
        return [{"error": f"too many URLs: {len(value)} (at most {max_urls})"}], ()
    lines = value.line_numbers if isinstance(value, UrlLines) else None
    max_length = conf.get("JOBS_MAX_URL_LENGTH")
    errors: list[dict[str, Any]] = []
    invalid = 0
    urls: list[str] = []
    for index, url in enumerate(value):
        if isinstance(url, str):
            url = url.strip()
            checked = _check_url(url, max_length)
            if isinstance(checked, str):
                problem = checked
            else:
                normalised = _normalised(checked)
                problem = None
                if len(normalised) > max_length:
                    problem = f"longer than {max_length} characters once its host is in ASCII (IDNA)"
                else:
                    urls.append(normalised)
        else:
            problem = f"must be a string, not {_json_type(url)}"
        if problem is None:
            continue
        invalid += 1
        if len(errors) < MAX_REPORTED_URL_ERRORS:
            item: dict[str, Any] = {"index": index}
            if lines is not None:
                item["line"] = lines[index]
            item["value"] = _shorten(url) if isinstance(url, str) else None
            item["error"] = problem
            errors.append(item)
    if invalid > len(errors):
        errors.append({"error": f"{invalid - len(errors)} more invalid URLs not listed"})
    return errors, tuple(urls)


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", str: "a string", int: "a number", float: "a number", dict: "an object"}
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "a list"
    return names.get(type(value), type(value).__name__)


def _clean_name(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {_json_type(value)}")
    name = value.strip()
    if len(name) > NAME_MAX_LENGTH:
        raise ValueError(f"must be at most {NAME_MAX_LENGTH} characters")
    return name


def _clean_concurrency(value: Any) -> int:
    """An int in range; text of an int is fine (forms, CLI), bools and floats are not."""
    upper = conf.get("JOBS_MAX_CONCURRENCY")
    message = f"must be an integer from 1 to {upper}"
    if _empty(value):
        return int(conf.get("JOBS_DEFAULT_CONCURRENCY"))
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= upper:
        raise ValueError(message)
    return value


def _clean_timeout(value: Any) -> float:
    """Seconds as a finite number in (0, max]; text of a number is fine, bools are not."""
    if _empty(value):
        return float(conf.get("JOBS_DEFAULT_TIMEOUT"))
    return _positive_seconds(value, upper=conf.get("JOBS_MAX_TIMEOUT"))


def _clean_deadline(value: Any, *, upper: float) -> float | None:
    """Seconds in (0, upper], or None (no deadline) when missing or empty."""
    if _empty(value):
        return None
    return _positive_seconds(value, upper=upper)


def _positive_seconds(value: Any, *, upper: float) -> float:
    """Seconds as a finite number in (0, upper]; text of a number is fine, bools are not."""
    message = f"must be a number of seconds greater than 0 and at most {upper:g}"
    seconds = _finite(value, message)
    if not 0 < seconds <= upper:
        raise ValueError(message)
    return seconds


def _empty(value: Any) -> bool:
    """Missing, null or blank text: the field takes its default."""
    return value is None or (isinstance(value, str) and not value.strip())


def _finite(value: Any, message: str) -> float:
    """A finite number from a JSON number or the text of one (a bool is not a number), else ValueError(message)."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(message) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(message)
    return float(value)


def _clean_int(value: Any, *, lower: int, upper: int, default: int) -> int:
    """An int in [lower, upper]; text of an int is fine (forms), bools and floats are not."""
    if _empty(value):
        return default
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not lower <= value <= upper:
        raise ValueError(f"must be an integer from {lower} to {upper}")
    return value


def _clean_seconds(value: Any, *, upper: float, default: float) -> float:
    """Seconds as a finite number in [0, upper]; text of a number is fine, bools are not."""
    message = f"must be a number of seconds from 0 to {upper:g}"
    if _empty(value):
        return default
    number = _finite(value, message)
    if not 0 <= number <= upper:
        raise ValueError(message)
    return number


def _clean_rate(value: Any) -> float | None:
    """Requests per second, a finite number in PER_HOST_RATE_RANGE, or None (empty: no rate)."""
    lower, upper = PER_HOST_RATE_RANGE
    message = f"must be a number of requests per second from {lower:g} to {upper:g}, or empty for no rate"
    if _empty(value):
        return None
    number = _finite(value, message)
    if not lower <= number <= upper:
        raise ValueError(message)
    return number


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def _clean_bool(value: Any) -> bool:
    """true/false (JSON), or the text a form checkbox or a CLI sends (on, 1, true / 0, false, empty)."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"must be true or false, not {_json_type(value)}")


def _clean_strict_bool(value: Any) -> bool:
    """true/false/null only (JSON; the form sends its checkbox as a bool): a newer option takes no "yes"."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    raise ValueError(f"must be true or false, not {_json_type(value)}")


def _option_cleaners() -> dict[str, Any]:
    """Field -> cleaner of the fetch options, with the limits read now (override_settings works)."""
    return {
        "per_host": lambda v: _clean_int(
            v, lower=1, upper=conf.get("JOBS_MAX_CONCURRENCY"), default=conf.get("JOBS_DEFAULT_PER_HOST")
        ),
        "host_delay": lambda v: _clean_seconds(v, upper=conf.get("JOBS_MAX_HOST_DELAY"), default=0.0),
        "retries": lambda v: _clean_int(
            v, lower=0, upper=conf.get("JOBS_MAX_RETRIES"), default=conf.get("JOBS_DEFAULT_RETRIES")
        ),
        "max_redirects": lambda v: _clean_int(
            v, lower=0, upper=conf.get("JOBS_MAX_REDIRECTS"), default=conf.get("JOBS_DEFAULT_MAX_REDIRECTS")
        ),
        "max_bytes": lambda v: _clean_int(
            v, lower=1, upper=conf.get("JOBS_MAX_BYTES"), default=conf.get("JOBS_DEFAULT_MAX_BYTES")
        ),
        "respect_robots": _clean_bool,
        "save_bodies": _clean_bool,
        "url_deadline": lambda v: _clean_deadline(v, upper=conf.get("JOBS_MAX_URL_DEADLINE")),
        "job_deadline": lambda v: _clean_deadline(v, upper=conf.get("JOBS_MAX_JOB_DEADLINE")),
        "per_host_rate": _clean_rate,
        "autothrottle": _clean_strict_bool,
    }


def validate_submission(data: Mapping[str, Any]) -> JobRequest:
    """Check a submission `{"urls": [...], "name"?, "concurrency"?, "timeout"?}`.

    Missing or null optional fields take their defaults (settings
    JOBS_DEFAULT_CONCURRENCY, JOBS_DEFAULT_TIMEOUT). Numbers may come as
    numbers (JSON) or as text (forms, CLI). Raises SubmissionError naming
    every problem at once, unknown fields included.
    """
    if not isinstance(data, Mapping):
        raise SubmissionError({"body": f"must be a JSON object with a 'urls' list, not {_json_type(data)}"})
    errors: dict[str, Any] = {}
    for key in data:
        if key not in FIELDS:
            errors[str(key)] = f"unknown field (expected {', '.join(FIELDS)})"
    request, secret = requests.clean_job_request(data, errors)
    lines: tuple[LineRecord, ...] = ()
    skipped: list[dict[str, Any]] = []
    try:
        skip_invalid = _clean_bool(data.get("skip_invalid"))
    except ValueError as exc:
        errors["skip_invalid"], skip_invalid = str(exc), False
    if "requests" in data:
        if "urls" in data:
            errors["urls"] = [{"error": "give urls or requests, not both"}]
        url_check = functools.partial(_line_url, max_length=conf.get("JOBS_MAX_URL_LENGTH"))
        checked = requests.check_lines(data["requests"], secret=secret, url_check=url_check)
        if checked.errors:
            errors["requests"] = checked.errors
        urls, lines = tuple(checked.urls), tuple(checked.records)
    else:
        url_errors, urls = _url_errors(data.get("urls"))
        if url_errors and skip_invalid and urls and _only_bad_urls(url_errors):
            skipped = url_errors
        elif url_errors:
            errors["urls"] = url_errors
    cleaned: dict[str, Any] = {}
    for name, clean in (("name", _clean_name), ("concurrency", _clean_concurrency), ("timeout", _clean_timeout)):
        try:
            cleaned[name] = clean(data.get(name))
        except ValueError as exc:
            errors[name] = str(exc)
    options: dict[str, Any] = {}
    for name, clean in _option_cleaners().items():
        try:
            options[name] = clean(data.get(name))
        except ValueError as exc:
            errors[name] = str(exc)
    if errors:
        raise SubmissionError(errors)
    return JobRequest(
        urls=urls, options=options, duplicates=len(urls) - len(set(urls)), request=request, lines=lines,
        skipped=tuple(_listed(skipped)), skipped_urls=0 if "requests" in data else len(data["urls"]) - len(urls),
        **cleaned,
    )


def _line_url(url: str, max_length: int) -> tuple[str, str | None]:
    """(the normalised URL, None), or ("", what is wrong with it): the URL check of a request line."""
    checked = _check_url(url.strip(), max_length)
    if isinstance(checked, str):
        return "", checked
    normalised = _normalised(checked)
    if len(normalised) > max_length:
        return "", f"longer than {max_length} characters once its host is in ASCII (IDNA)"
    return normalised, None


def _only_bad_urls(url_errors: list[dict[str, Any]]) -> bool:
    """True when every error is about single URLs (which `skip_invalid` may leave out), none about the list."""
    return all("index" in item or item["error"].endswith("more invalid URLs not listed") for item in url_errors)


def _listed(url_errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for item in url_errors if "index" in item]


# Validating 100k URLs takes a noticeable fraction of a second: off the event loop.
avalidate_submission = sync_to_async(validate_submission, thread_sensitive=False)
