"""Turn user input into a job: parsing, validation, submit and cancel.

One place for the rules, shared by the JSON API, the WebSocket submit, the HTML
form and the CLI. Validation never touches the database and reports every
problem at once, each bad URL by its index (and its source line when the URLs
came from pasted text or an uploaded file), so a 400 names what to fix.

`submit()`/`cancel()` store the change, then announce it on the channel layer
(a wake-up for the workers, an update for the pages). The announcement is only
a speed-up: the database is the source of truth, and `progress` never raises.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import SplitResult, urlsplit, urlunsplit

import idna
from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from django.contrib.auth.models import AbstractBaseUser

from jobs import conf
from jobs.exceptions import JobsError
from jobs.models import Job, Result
from jobs.progress import groups
from jobs.queue import claims
from jobs.submission import limits

OPTION_FIELDS = ("per_host", "host_delay", "retries", "max_redirects", "max_bytes", "respect_robots", "save_bodies")
FIELDS = ("urls", "name", "concurrency", "timeout", *OPTION_FIELDS)
NAME_MAX_LENGTH: int = Job._meta.get_field("name").max_length  # type: ignore[assignment]
# A 100k-line paste full of garbage must not produce a 10 MB error response.
MAX_REPORTED_URL_ERRORS = 1000
# Long values are echoed back shortened; the index already identifies them.
MAX_ECHOED_VALUE = 200

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_WHITESPACE = re.compile(r"\s")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INTEGER = re.compile(r"[+-]?\d+")
_DNS_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


class SubmissionError(JobsError):
    """Invalid input. `errors` maps each bad field to what is wrong with it.

    `errors["urls"]`, when present, is a list of dicts, each with an `error`
    message; those about one URL also carry its 0-based `index`, the `value`
    (shortened) and, for URLs parsed from text, the 1-based `line`.
    Other fields map to a message string.
    """

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__(errors)
        self.errors = errors


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
    save_bodies), all present after validation."""
    duplicates: int = 0
    """URLs that repeat an earlier one of the list (after normalisation); they are kept, and reported."""


class UrlLines(list[str]):
    """URLs parsed from text; `line_numbers[i]` is the 1-based source line of URL i.

    A plain list of strings everywhere, except that `validate_submission()`
    uses the line numbers to name the line of each bad URL. Treat it as
    read-only: appending would leave the line numbers behind.
    """

    def __init__(self, numbered: Iterable[tuple[int, str]] = ()) -> None:
        pairs = list(numbered)
        super().__init__(url for _, url in pairs)
        self.line_numbers: list[int] = [line for line, _ in pairs]


# --- Parsing text and files ------------------------------------------------------


def parse_url_lines(text: str) -> UrlLines:
    """Split pasted text into URLs, one per line.

    Surrounding whitespace is stripped; blank lines and lines starting with
    `#` are skipped. Each URL keeps its line number for error messages. No URL
    is checked here: `validate_submission()` does that.
    """
    numbered = []
    for number, raw in enumerate(_LINE_BREAK.split(text), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            numbered.append((number, line))
    return UrlLines(numbered)


def parse_url_csv(text: str) -> UrlLines:
    """Read URLs from CSV text: the column headed `url`, else the first column.

    A first row with a cell `url` (any case) is a header and is skipped.
    Blank rows and rows whose URL cell starts with `#` are skipped.
    Raises SubmissionError({"file": ...}) if the CSV cannot be read.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    numbered: list[tuple[int, str]] = []
    column = 0
    header_checked = False
    last_line = 0
    try:
        for row in reader:
            # A quoted field may span lines: a row starts after the previous one ended.
            first_line, last_line = last_line + 1, reader.line_num
            cells = [cell.strip() for cell in row]
            if not header_checked and any(cells):
                header_checked = True
                header = [cell.lower() for cell in cells]
                if "url" in header:
                    column = header.index("url")
                    continue
            value = cells[column] if column < len(cells) else ""
            if value and not value.startswith("#"):
                numbered.append((first_line, value))
    except csv.Error as exc:
        raise SubmissionError({"file": f"line {reader.line_num}: unreadable CSV ({exc})"}) from exc
    return UrlLines(numbered)


def parse_url_file(data: bytes, *, filename: str = "") -> UrlLines:
    """Read URLs from an uploaded file: CSV if the name ends in .csv, else one per line.

    The file must be UTF-8 (a byte-order mark is allowed).
    Raises SubmissionError({"file": ...}) if it is not readable text.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SubmissionError({"file": f"line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x})"}) from exc
    if filename.lower().endswith(".csv"):
        return parse_url_csv(text)
    return parse_url_lines(text)


# --- Validation ---------------------------------------------------------------------


def url_problem(url: str, *, max_length: int | None = None) -> str | None:
    """Say what is wrong with `url` as a fetch target, or None if it is fine.

    Accepted: an absolute http or https URL with a valid host (DNS name,
    IPv4 or bracketed IPv6), an optional port 1-65535, at most `max_length`
    characters (default: setting JOBS_MAX_URL_LENGTH).
    """
    checked = _check_url(url, conf.get("JOBS_MAX_URL_LENGTH") if max_length is None else max_length)
    return checked if isinstance(checked, str) else None


class _Parts(NamedTuple):
    """A valid URL, split once (a submission checks and normalises up to a million of them)."""

    split: SplitResult
    host: str
    port: int | None


def _check_url(url: str, limit: int) -> _Parts | str:
    """`url` split, or what is wrong with it (see `url_problem`)."""
    if not url:
        return "empty URL"
    if len(url) > limit:
        return f"longer than {limit} characters"
    if _WHITESPACE.search(url):
        return "contains whitespace"
    if _CONTROL.search(url):
        return "contains control characters"
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    scheme = parts.scheme.lower()
    # "localhost:8000" parses with scheme "localhost": only "<scheme>://" counts as a scheme.
    if not scheme or not url[len(scheme) :].startswith("://"):
        return "not an absolute URL (must start with http:// or https://)"
    if scheme not in ("http", "https"):
        return f"scheme must be http or https, not {scheme!r}"
    if not host:
        return "missing host"
    if port == 0:
        return "invalid port 0"
    return _host_problem(host, bracketed=parts.netloc.rpartition("@")[2].startswith("[")) or _Parts(parts, host, port)


def _host_problem(host: str, *, bracketed: bool) -> str | None:
    """Check a host: an IP literal or a DNS name (international names via IDNA)."""
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"invalid IPv6 address {host!r}"
        return None
    try:
        ascii_name = ascii_host(host)
    except ValueError as exc:
        return f"invalid host name {_shorten(host)!r} ({exc})"
    labels = ascii_name.removesuffix(".").split(".")
    if len(ascii_name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        return f"invalid host name {_shorten(host)!r}"
    return None


def ascii_host(host: str) -> str:
    """A host name in lowercase ASCII: international names by IDNA 2008 with the UTS 46 mapping (as httpx
    and browsers do), so "Bücher.example" becomes "xn--bcher-kva.example". ValueError if it has none."""
    if host.isascii():
        return host.lower()
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(str(exc) or "not a valid international domain name") from exc


def normalise_url(url: str) -> str:
    """The form a valid URL (`url_problem` is None) is stored and fetched in.

    Surrounding whitespace goes, scheme and host become lowercase, the host
    ASCII (IDNA), an empty path "/", and the fragment (never sent to a server)
    goes. Port, credentials, path and query stay as written. Idempotent.
    """
    parts = urlsplit(url.strip())
    return _normalised(_Parts(parts, parts.hostname or "", parts.port))


def _normalised(url: _Parts) -> str:
    parts, host = url.split, url.host
    netloc = f"[{host}]" if ":" in host else ascii_host(host)
    if url.port is not None:
        netloc += f":{url.port}"
    if "@" in parts.netloc:
        netloc = parts.netloc.rpartition("@")[0] + "@" + netloc
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))


def _shorten(value: str) -> str:
    return value if len(value) <= MAX_ECHOED_VALUE else value[: MAX_ECHOED_VALUE - 1] + "…"


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
                problem = None
                urls.append(_normalised(checked))
                if len(urls[-1]) > max_length:
                    problem = f"longer than {max_length} characters once its host is in ASCII (IDNA)"
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
    if value is None or (isinstance(value, str) and not value.strip()):
        return int(conf.get("JOBS_DEFAULT_CONCURRENCY"))
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= upper:
        raise ValueError(message)
    return value


def _clean_timeout(value: Any) -> float:
    """Seconds as a finite number in (0, max]; text of a number is fine, bools are not."""
    upper = conf.get("JOBS_MAX_TIMEOUT")
    message = f"must be a number of seconds greater than 0 and at most {upper:g}"
    if value is None or (isinstance(value, str) and not value.strip()):
        return float(conf.get("JOBS_DEFAULT_TIMEOUT"))
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(message) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(message)
    seconds = float(value)
    if not math.isfinite(seconds) or not 0 < seconds <= upper:
        raise ValueError(message)
    return seconds


def _clean_int(value: Any, *, lower: int, upper: int, default: int) -> int:
    """An int in [lower, upper]; text of an int is fine (forms), bools and floats are not."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not lower <= value <= upper:
        raise ValueError(f"must be an integer from {lower} to {upper}")
    return value


def _clean_seconds(value: Any, *, upper: float, default: float) -> float:
    """Seconds as a finite number in [0, upper]; text of a number is fine, bools are not."""
    message = f"must be a number of seconds from 0 to {upper:g}"
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(message) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(message)
    if not 0 <= value <= upper:
        raise ValueError(message)
    return float(value)


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
    url_errors, urls = _url_errors(data.get("urls"))
    if url_errors:
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
    return JobRequest(urls=urls, options=options, duplicates=len(urls) - len(set(urls)), **cleaned)


# Validating 100k URLs takes a noticeable fraction of a second: off the event loop.
avalidate_submission = sync_to_async(validate_submission, thread_sensitive=False)


# --- Submit and cancel ----------------------------------------------------------------


def submit(owner: AbstractBaseUser, request: JobRequest, *, check_limits: bool = True) -> Job:
    """Store the job (all rows or none), wake the workers, update the owner's pages.

    For sync callers (form views, CLI); async code uses `asubmit()`. Raises
    limits.LimitExceeded, storing nothing, when the owner is over a limit
    (`check_limits=False`: an operator's deliberate action in the admin).
    """
    if check_limits:
        limits.check_submission(owner)
    job = _enqueue(owner, request)
    async_to_sync(_announce_new)(job)
    return job


async def asubmit(owner: AbstractBaseUser, request: JobRequest) -> Job:
    """Async `submit()`: the database work runs in a thread, off the event loop."""
    await limits.acheck_submission(owner)
    job = await database_sync_to_async(_enqueue)(owner, request)
    await _announce_new(job)
    return job


def cancel(job_id: uuid.UUID | str) -> Job:
    """Request cancellation (see `claims.request_cancel`) and announce the new state.

    The caller has checked that the user owns the job. Raises Job.DoesNotExist.
    """
    job = claims.request_cancel(job_id)
    async_to_sync(_announce_change)(job)
    return job


async def acancel(job_id: uuid.UUID | str) -> Job:
    """Async `cancel()`."""
    job = await database_sync_to_async(claims.request_cancel)(job_id)
    await _announce_change(job)
    return job


def pause(job_id: uuid.UUID | str) -> Job:
    """Request a pause (see `claims.request_pause`) and announce the new state. Raises Job.DoesNotExist."""
    job = claims.request_pause(job_id)
    async_to_sync(_announce_change)(job)
    return job


async def apause(job_id: uuid.UUID | str) -> Job:
    """Async `pause()`."""
    job = await claims.arequest_pause(job_id)
    await _announce_change(job)
    return job


def resume(job_id: uuid.UUID | str) -> Job:
    """Resume a paused job (see `claims.request_resume`), wake the workers, announce it."""
    job = claims.request_resume(job_id)
    async_to_sync(_announce_new if job.status == Job.Status.QUEUED else _announce_change)(job)
    return job


async def aresume(job_id: uuid.UUID | str) -> Job:
    """Async `resume()`."""
    job = await claims.arequest_resume(job_id)
    await (_announce_new if job.status == Job.Status.QUEUED else _announce_change)(job)
    return job


RERUN_SUFFIX = " (re-run)"
RERUN_FAILED_SUFFIX = " (re-run failed)"


def rerun(job: Job, *, failed_only: bool, check_limits: bool = True) -> Job | None:
    """A new job for the same owner and options over `job`'s URLs (only the failed ones if `failed_only`).

    The URLs keep their original order. They passed validation when first
    submitted, so they are queued as they are. Returns None when there is
    nothing to re-run (no failed URL). Shared by the admin actions
    (`check_limits=False`: an operator's deliberate action) and the API.
    """
    rows = job.results.all()
    if failed_only:
        rows = rows.filter(outcome=Result.Outcome.FAILED)
    urls = tuple(rows.order_by("position").values_list("url", flat=True))
    if not urls:
        return None
    suffix = RERUN_FAILED_SUFFIX if failed_only else RERUN_SUFFIX
    base = job.name or f"job {str(job.pk)[:8]}"
    name = base[: NAME_MAX_LENGTH - len(suffix)] + suffix
    options = {option: getattr(job, option) for option in OPTION_FIELDS}
    request = JobRequest(urls=urls, name=name, concurrency=job.concurrency, timeout=job.timeout, options=options)
    return submit(job.owner, request, check_limits=check_limits)


def _enqueue(owner: AbstractBaseUser, request: JobRequest) -> Job:
    return claims.enqueue_job(
        owner=owner, urls=request.urls, name=request.name, concurrency=request.concurrency, timeout=request.timeout,
        options={**request.options, "duplicate_urls": request.duplicates},
    )


async def _announce_new(job: Job) -> None:
    await groups.wake_workers()
    await groups.publish_job_update(job)


async def _announce_change(job: Job) -> None:
    await groups.publish_job_update(job)
