"""Requests, not only URLs: the job's request defaults and per-line requests (JSON Lines), validated.

A submission may carry, besides or instead of `urls`, the job-level `method`,
`headers`, `json` or `body`, `retry_unsafe` and `secret_headers` (names to
treat as secret besides Authorization, Cookie, Proxy-Authorization and
X-Api-Key), and `requests`: a list of `{"url", "method"?, "headers"?, "json"? |
"body"?}` objects, or the same as JSON Lines text (what a `.jsonl` file holds).
Every problem is reported at once: a line's by its `index` (and source `line`)
and its `field`. Only what a line overrides is stored for it (`LineRecord`), so
lines with just a URL cost what a plain URL costs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jobs import conf, requestdata
from jobs.engine.requestspec import METHODS
from jobs.exceptions import SubmissionError
from jobs.requestdata import LineRecord

JOB_FIELDS = ("method", "headers", "json", "body", "retry_unsafe", "secret_headers")
"""Submission fields of the job-level request (besides `requests`)."""
LINE_FIELDS = ("url", "method", "headers", "json", "body")
FORBIDDEN_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",  # hop-by-hop
    "host", "content-length",  # the client sets them from the URL and the body
})  # fmt: skip
MAX_REPORTED_ERRORS = 1000
MAX_ECHOED_VALUE = 200

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""RFC 9110 5.1: a field name is a token."""
_FIELD_VALUE = re.compile(r"[\x20-\x7e\t]*")
"""Visible ASCII, space and tab (RFC 9110 5.5 without obs-text): no CR, LF or NUL can smuggle a header in."""
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""How a `json` body is sent (one encoder for every line: json.dumps with options builds one per call)."""


class RequestLines(list[Any]):
    """Request lines parsed from JSON Lines text; `line_numbers[i]` is the 1-based source line of item i.

    An item that is not JSON is kept as a `NotJson` so validation reports it with the others."""

    def __init__(self, numbered: Iterable[tuple[int, Any]] = ()) -> None:
        pairs = list(numbered)
        super().__init__(item for _, item in pairs)
        self.line_numbers: list[int] = [line for line, _ in pairs]


@dataclass(frozen=True, slots=True)
class NotJson:
    """A line of JSON Lines text that did not parse."""

    text: str
    error: str


def parse_request_lines(text: str, *, first_line: int = 1) -> RequestLines:
    """Split JSON Lines text into items, one per non-blank line (lines starting with # are skipped too)."""
    numbered: list[tuple[int, Any]] = []
    for number, raw in enumerate(_LINE_BREAK.split(text), start=first_line):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            numbered.append((number, json.loads(line)))
        except (json.JSONDecodeError, RecursionError) as exc:
            error = f"not JSON: {exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else (
                "not JSON: nested too deeply")  # fmt: skip
            numbered.append((number, NotJson(line, error)))
    return RequestLines(numbered)


def is_jsonl(filename: str) -> bool:
    return filename.lower().endswith((".jsonl", ".ndjson"))


def parse_request_file(data: bytes) -> RequestLines:
    """Request lines from an uploaded JSON Lines file (UTF-8); SubmissionError({"file": ...}) if it is not text."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SubmissionError({"file": f"line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x})"}) from exc
    return parse_request_lines(text)


def parse_headers_text(text: str) -> dict[str, str] | None:
    """`Name: value` lines (a form's textarea) as a headers object; None when empty. ValueError names the line."""
    headers: dict[str, str] = {}
    for number, raw in enumerate(_LINE_BREAK.split(text), start=1):
        if not raw.strip():
            continue
        name, colon, value = raw.partition(":")
        if not colon or not name.strip():
            raise ValueError(f"line {number}: write each header as Name: value")
        headers[name.strip()] = value.strip()
    return headers or None


# --- the parts of a request ----------------------------------------------------------------------


def clean_method(value: Any, *, default: str) -> str:
    if value is None or value == "":
        return default
    if not isinstance(value, str) or value.strip().upper() not in METHODS:
        shown = value if isinstance(value, str) else type(value).__name__
        raise ValueError(f"must be one of {', '.join(METHODS)}, not {_shorten(str(shown))!r}")
    return value.strip().upper()


def clean_headers(value: Any) -> list[tuple[str, str]]:
    """An object of name -> value (or a list of [name, value] pairs), each a valid HTTP field."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
        pairs = [tuple(pair) for pair in value]
    else:
        raise ValueError("must be an object of header name -> value")
    seen: set[str] = set()
    cleaned: list[tuple[str, str]] = []
    for name, text in pairs:
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"{_shorten(str(name))!r} is not a valid header name (letters, digits, !#$%&'*+-.^_`|~)")
        if name.lower() in FORBIDDEN_HEADERS:
            raise ValueError(f"{name} is set by the client and cannot be given")
        if name.lower() in seen:
            raise ValueError(f"{name} is given twice")
        seen.add(name.lower())
        if not isinstance(text, str):
            raise ValueError(f"{name}: the value must be a string")
        if not _FIELD_VALUE.fullmatch(text):
            raise ValueError(f"{name}: the value may hold only visible ASCII, spaces and tabs (no CR, LF or NUL)")
        cleaned.append((name, text.strip(" \t")))
    return cleaned


def clean_body(data: Mapping[str, Any], limit: int) -> tuple[str | None, bool]:
    """(the body text, whether it is JSON) from `json` or `body`, at most `limit` bytes."""
    if "json" in data and "body" in data:
        raise ValueError("give json or body, not both")
    if "json" in data:
        text = _COMPACT_JSON.encode(data["json"])
        is_json = True
    elif data.get("body") is not None:
        if not isinstance(data["body"], str):
            raise ValueError("must be a string (send structured data as json)")
        text, is_json = data["body"], False
    else:
        return None, False
    size = len(text.encode())
    if size > limit:
        raise ValueError(f"body of {size} bytes is over the limit of {limit} bytes (JOBS_MAX_REQUEST_BODY_BYTES)")
    return text, is_json


def body_limit() -> int:
    """The most bytes a request body may have (JOBS_MAX_REQUEST_BODY_BYTES)."""
    return int(conf.get("JOBS_MAX_REQUEST_BODY_BYTES"))


def clean_secret_names(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, (list, tuple)) or not all(isinstance(n, str) and _TOKEN.fullmatch(n) for n in value):
        raise ValueError("must be a list of header names")
    return frozenset(name.lower() for name in value)


def _with_json_type(headers: list[tuple[str, str]], is_json: bool) -> list[tuple[str, str]]:
    """A json body is sent as application/json unless the same object sets Content-Type."""
    if is_json and not any(name.lower() == "content-type" for name, _ in headers):
        return [*headers, ("Content-Type", "application/json")]
    return headers


# --- the job's request ------------------------------------------------------------------------------------


def clean_job_request(data: Mapping[str, Any], errors: dict[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    """(the Job fields of the job-level request, the names marked secret); problems go into `errors`.

    No field given: no Job fields (a plain GET, stored exactly as before)."""
    fields: dict[str, Any] = {}
    if all(data.get(name) is None for name in JOB_FIELDS) and "json" not in data:
        return fields, frozenset()
    try:
        fields["method"] = clean_method(data.get("method"), default="GET")
    except ValueError as exc:
        errors["method"] = str(exc)
    secret: frozenset[str] = frozenset()
    try:
        secret = clean_secret_names(data.get("secret_headers"))
    except ValueError as exc:
        errors["secret_headers"] = str(exc)
    headers: list[tuple[str, str]] = []
    try:
        headers = clean_headers(data.get("headers"))
    except ValueError as exc:
        errors["headers"] = str(exc)
    try:
        fields["request_body"], is_json = clean_body(data, body_limit())
        headers = _with_json_type(headers, is_json)
    except ValueError as exc:
        errors["json" if "json" in data else "body"] = str(exc)
    try:
        fields["retry_unsafe"] = _clean_bool(data.get("retry_unsafe"))
    except ValueError as exc:
        errors["retry_unsafe"] = str(exc)
    if "headers" not in errors and "secret_headers" not in errors:
        fields["request_headers"], fields["sealed_headers"] = requestdata.store_headers(headers, secret=secret)
    return fields, secret


def _clean_bool(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise ValueError("must be true or false")


# --- the lines -----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class CheckedLines:
    """The outcome of `check_lines`."""

    urls: list[str]
    records: list[LineRecord]
    errors: list[dict[str, Any]]


def check_lines(value: Any, *, secret: frozenset[str], url_check: Any) -> CheckedLines:
    """Validate `requests` (a list of objects, or JSON Lines text); `url_check(url) -> (normalised, problem)`."""
    if isinstance(value, str):
        value = parse_request_lines(value)
    checked = CheckedLines([], [], [])
    if not isinstance(value, (list, tuple)) or not value:
        checked.errors.append({"error": "must be a non-empty list of requests (or JSON Lines text)"})
        return checked
    max_urls = conf.get("JOBS_MAX_URLS")
    if len(value) > max_urls:
        checked.errors.append({"error": f"too many requests: {len(value)} (at most {max_urls})"})
        return checked
    lines = value.line_numbers if isinstance(value, RequestLines) else None
    max_body = body_limit()  # settings are read once, not once per line
    invalid = 0
    for index, item in enumerate(value):
        problems = _line_problems(index, item, secret, url_check, max_body, checked)
        if not problems:
            continue
        invalid += 1
        for field_name, problem in problems:
            if len(checked.errors) >= MAX_REPORTED_ERRORS:
                break
            entry: dict[str, Any] = {"index": index}
            if lines is not None:
                entry["line"] = lines[index]
            entry.update(field=field_name, error=problem)
            checked.errors.append(entry)
    reported = len({e["index"] for e in checked.errors if "index" in e})
    if invalid > reported:
        checked.errors.append({"error": f"{invalid - reported} more invalid lines not listed"})
    return checked


def _line_problems(
    index: int, item: Any, secret: frozenset[str], url_check: Any, max_body: int, checked: CheckedLines
) -> list[tuple[str, str]]:
    """The (field, problem) pairs of one line; a good line is appended to `checked`."""
    if isinstance(item, NotJson):
        return [("line", f"{item.error} ({_shorten(item.text)})")]
    if isinstance(item, str):
        item = {"url": item}  # a bare URL is a line with nothing to override
    if not isinstance(item, Mapping):
        return [("line", "must be an object with a url")]
    problems: list[tuple[str, str]] = [
        (str(key), f"unknown field (expected {', '.join(LINE_FIELDS)})") for key in item if key not in LINE_FIELDS
    ]
    url = item.get("url")
    normalised = ""
    if not isinstance(url, str):
        problems.append(("url", "required: an absolute http(s) URL" if url is None else "must be a string"))
    else:
        normalised, problem = url_check(url)
        if problem:
            problems.append(("url", f"{problem} ({_shorten(url)})"))
    record: dict[str, Any] = {}
    try:
        method = clean_method(item.get("method"), default="")
        if method:
            record["method"] = method
    except ValueError as exc:
        problems.append(("method", str(exc)))
    headers: list[tuple[str, str]] = []
    try:
        headers = clean_headers(item.get("headers"))
    except ValueError as exc:
        problems.append(("headers", str(exc)))
    try:
        body, is_json = clean_body(item, max_body)
        headers = _with_json_type(headers, is_json)
        if body is not None:
            record["body"] = body
    except ValueError as exc:
        problems.append(("json" if "json" in item else "body", str(exc)))
    if problems:
        return problems
    if headers:
        record["headers"], record["sealed_headers"] = requestdata.store_headers(headers, secret=secret)
    checked.urls.append(normalised)
    if record:
        checked.records.append(LineRecord(position=index, **record))
    return []


def _shorten(value: str) -> str:
    return value if len(value) <= MAX_ECHOED_VALUE else value[: MAX_ECHOED_VALUE - 1] + "…"
