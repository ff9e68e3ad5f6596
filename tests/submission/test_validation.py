"""Input validation and submit/cancel (jobs/submission/validation.py)."""

from __future__ import annotations

import asyncio
import string
from typing import Any
from urllib.parse import urlsplit

import pytest
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from jobs.models import Job, Result
from jobs.progress import groups
from jobs.submission import validation
from jobs.submission.validation import (
    SubmissionError,
    parse_url_csv,
    parse_url_file,
    parse_url_lines,
    validate_submission,
)

MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture(autouse=True)
def memory_layer(settings: Any) -> None:
    settings.CHANNEL_LAYERS = MEMORY_LAYER


async def receive(layer: Any, channel: str) -> dict[str, Any]:
    return await asyncio.wait_for(layer.receive(channel), timeout=2)


def errors_of(data: Any) -> dict[str, Any]:
    with pytest.raises(SubmissionError) as info:
        validate_submission(data)
    return info.value.errors


# --- parsing ----------------------------------------------------------------------------


def test_parse_url_lines_skips_blanks_and_comments_and_keeps_line_numbers() -> None:
    text = "# my list\n\n  https://a.example/  \r\nhttp://b.example/x\r\n\t\n#http://skipped/\nftp://c.example/"
    urls = parse_url_lines(text)
    assert urls == ["https://a.example/", "http://b.example/x", "ftp://c.example/"]
    assert urls.line_numbers == [3, 4, 7]


def test_pasted_bad_line_is_named_by_line_and_index() -> None:
    urls = parse_url_lines("http://ok.example/\n\n# note\nnot a url\nhttp://ok.example/2\nftp://x.example/")
    errors = errors_of({"urls": urls})
    assert errors == {
        "urls": [
            {"index": 1, "line": 4, "value": "not a url", "error": "contains whitespace"},
            {"index": 3, "line": 6, "value": "ftp://x.example/", "error": "scheme must be http or https, not 'ftp'"},
        ]
    }


def test_csv_uses_url_column_and_reports_start_lines() -> None:
    text = 'name,URL\nfirst,http://a.example/\n\n"two\nlines",http://b.example/\nc,#skipped\nd,ftp://d.example/\n'
    urls = parse_url_csv(text)
    assert urls == ["http://a.example/", "http://b.example/", "ftp://d.example/"]
    assert urls.line_numbers == [2, 4, 7]


def test_csv_without_header_uses_first_column() -> None:
    urls = parse_url_file(b"http://a.example/,200\nhttp://b.example/,404\n", filename="LIST.CSV")
    assert urls == ["http://a.example/", "http://b.example/"]
    assert urls.line_numbers == [1, 2]


def test_text_file_with_bom_and_mixed_line_endings() -> None:
    urls = parse_url_file(b"\xef\xbb\xbfhttp://a.example/\r\nhttp://b.example/\rhttp://c.example/\n", filename="x.txt")
    assert urls == ["http://a.example/", "http://b.example/", "http://c.example/"]
    assert urls.line_numbers == [1, 2, 3]


def test_file_that_is_not_utf8_names_the_line() -> None:
    with pytest.raises(SubmissionError) as info:
        parse_url_file(b"http://a.example/\nhttp://b.example/\xff\n")
    assert info.value.errors == {"file": "line 2: not UTF-8 text (byte 0xff)"}


# --- URL rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "https://example.com/path?q=1#frag",
        "HTTPS://EXAMPLE.COM:8443/",
        "http://127.0.0.1:8000/x",
        "http://[::1]:8080/",
        "http://user:secret@example.com/",
        "http://bücher.example/",
        "http://localhost/",
        "http://example.com./",
    ],
)
def test_valid_urls(url: str) -> None:
    assert validation.url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "empty URL"),
        ("example.com/page", "not an absolute URL (must start with http:// or https://)"),
        ("localhost:8000", "not an absolute URL (must start with http:// or https://)"),
        ("http:example.com", "not an absolute URL (must start with http:// or https://)"),
        ("ftp://example.com/", "scheme must be http or https, not 'ftp'"),
        ("javascript://alert(1)", "scheme must be http or https, not 'javascript'"),
        ("http:///path", "missing host"),
        ("http://:80/", "missing host"),
        ("http://exa mple.com/", "contains whitespace"),
        ("http://example.com/\x00", "contains control characters"),
        ("http://example.com:99999/", "not a valid URL (Port out of range 0-65535)"),
        ("http://example.com:0/", "invalid port 0"),
        ("http://[::1/", "not a valid URL (Invalid IPv6 URL)"),
        ("http://bad_host!/", "invalid host name 'bad_host!'"),
        ("http://-lead.example/", "invalid host name '-lead.example'"),
        ("http://a..b/", "invalid host name 'a..b'"),
    ],
)
def test_invalid_urls(url: str, problem: str) -> None:
    assert validation.url_problem(url) == problem


def test_url_length_limit(settings: Any) -> None:
    settings.JOBS_MAX_URL_LENGTH = 30
    ok = "http://example.com/" + "x" * 11
    assert len(ok) == 30
    assert validation.url_problem(ok) is None
    assert validation.url_problem(ok + "x") == "longer than 30 characters"


# --- the other fields ------------------------------------------------------------------------


def test_defaults_apply_to_missing_and_null_fields(settings: Any) -> None:
    settings.JOBS_DEFAULT_CONCURRENCY = 7
    settings.JOBS_DEFAULT_TIMEOUT = 2.5
    request = validate_submission({"urls": ["http://a.example/"], "name": None, "timeout": None})
    assert request == validation.JobRequest(
        urls=("http://a.example/",), name="", concurrency=7, timeout=2.5,
        options={"per_host": 8, "host_delay": 0.0, "retries": 2, "max_redirects": 10, "max_bytes": 10 * 1024 * 1024,
                 "respect_robots": False, "save_bodies": False},
    )  # fmt: skip


def test_text_numbers_from_forms_are_accepted() -> None:
    data = {"urls": ["http://a.example/"], "concurrency": " 25 ", "timeout": "1.5", "name": " x "}
    request = validate_submission(data)
    assert (request.concurrency, request.timeout, request.name) == (25, 1.5, "x")


@pytest.mark.parametrize("value", [0, 1001, -1, True, False, 5.0, 2.5, "5.0", "ten", [], {}])
def test_bad_concurrency(value: Any) -> None:
    errors = errors_of({"urls": ["http://a.example/"], "concurrency": value})
    assert errors == {"concurrency": "must be an integer from 1 to 1000"}


@pytest.mark.parametrize("value", [0, -1, 0.0, 300.5, True, float("nan"), float("inf"), "nan", "soon", []])
def test_bad_timeout(value: Any) -> None:
    errors = errors_of({"urls": ["http://a.example/"], "timeout": value})
    assert errors == {"timeout": "must be a number of seconds greater than 0 and at most 300"}


def test_limits_follow_settings(settings: Any) -> None:
    settings.JOBS_MAX_CONCURRENCY = 50
    settings.JOBS_MAX_TIMEOUT = 10
    assert validate_submission({"urls": ["http://a.example/"], "concurrency": 50, "timeout": 10}).concurrency == 50
    errors = errors_of({"urls": ["http://a.example/"], "concurrency": 51, "timeout": 10.01})
    assert errors == {
        "concurrency": "must be an integer from 1 to 50",
        "timeout": "must be a number of seconds greater than 0 and at most 10",
    }


@pytest.mark.parametrize(
    ("urls", "error"),
    [
        (None, "required: a non-empty list of URLs"),
        ([], "must not be empty"),
        ("http://a.example/", "must be a list of URLs, not a string"),
        ({"url": "http://a.example/"}, "must be a list of URLs, not an object"),
    ],
)
def test_bad_url_list(urls: Any, error: str) -> None:
    data = {} if urls is None else {"urls": urls}
    assert errors_of(data) == {"urls": [{"error": error}]}


def test_too_many_urls(settings: Any) -> None:
    settings.JOBS_MAX_URLS = 3
    assert len(validate_submission({"urls": ["http://a.example/"] * 3}).urls) == 3
    assert errors_of({"urls": ["http://a.example/"] * 4}) == {"urls": [{"error": "too many URLs: 4 (at most 3)"}]}


def test_every_problem_is_reported_at_once() -> None:
    errors = errors_of(
        {"urls": ["http://ok.example/", 42, "nope"], "concurrency": True, "timeout": 0, "name": "n" * 201, "retry": 3}
    )
    assert errors == {
        "retry": f"unknown field (expected {', '.join(validation.FIELDS)})",
        "urls": [
            {"index": 1, "value": None, "error": "must be a string, not a number"},
            {"index": 2, "value": "nope", "error": "not an absolute URL (must start with http:// or https://)"},
        ],
        "name": "must be at most 200 characters",
        "concurrency": "must be an integer from 1 to 1000",
        "timeout": "must be a number of seconds greater than 0 and at most 300",
    }


def test_body_that_is_not_an_object() -> None:
    assert errors_of(["http://a.example/"]) == {"body": "must be a JSON object with a 'urls' list, not a list"}


def test_error_list_is_capped_with_a_summary() -> None:
    count = validation.MAX_REPORTED_URL_ERRORS + 5
    errors = errors_of({"urls": ["bad"] * count})["urls"]
    assert len(errors) == validation.MAX_REPORTED_URL_ERRORS + 1
    assert errors[-2]["index"] == validation.MAX_REPORTED_URL_ERRORS - 1
    assert errors[-1] == {"error": "5 more invalid URLs not listed"}


def test_long_values_are_echoed_shortened(settings: Any) -> None:
    settings.JOBS_MAX_URL_LENGTH = 10_000
    url = "ftp://example.com/" + "x" * 5000
    (item,) = errors_of({"urls": [url]})["urls"]
    assert len(item["value"]) == validation.MAX_ECHOED_VALUE
    assert url.startswith(item["value"][:-1])


# --- properties ---------------------------------------------------------------------------------

_LABEL = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
_HOST = st.one_of(
    st.lists(_LABEL, min_size=1, max_size=4).map(".".join),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda address: f"[{address}]"),
    st.sampled_from(["bücher.example", "例え.テスト", "xn--bcher-kva.example"]),
)
_PATH_CHARS = string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@/"


@st.composite
def valid_urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http", "https", "HTTP", "Https"]))
    host = draw(_HOST)
    port = draw(st.none() | st.integers(1, 65535))
    path = draw(st.text(_PATH_CHARS, max_size=40))
    query = draw(st.none() | st.text(_PATH_CHARS + "?", max_size=20))
    url = f"{scheme}://{host}" + (f":{port}" if port else "") + "/" + path
    return url + (f"?{query}" if query is not None else "")


garbage = st.one_of(
    st.text(max_size=30).filter(lambda text: "://" not in text),
    st.builds(lambda url, scheme: scheme + url[url.index(":") :], valid_urls(), st.sampled_from(["ftp", "file", "ws"])),
    # Whitespace inside a URL is an error; around it, it is trimmed (so the tail must not be blank).
    st.builds(lambda url, tail: f"{url} {tail}", valid_urls(), st.text(min_size=1, max_size=5).filter(str.strip)),
    st.builds(lambda url: url + "x" * 2048, valid_urls()),
    st.integers(),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)


@hsettings(deadline=None, max_examples=300)
@given(st.lists(valid_urls(), min_size=1, max_size=30))
def test_any_valid_url_list_is_accepted(urls: list[str]) -> None:
    request = validate_submission({"urls": urls})
    assert request.urls == tuple(validation.normalise_url(url) for url in urls)
    assert request.duplicates == len(urls) - len(set(request.urls))


@hsettings(deadline=None, max_examples=300)
@given(valid_urls(), st.text(" \t", max_size=3), st.text(" \t\r\n", max_size=3))
def test_normalisation_is_idempotent_valid_and_ascii(url: str, before: str, after: str) -> None:
    normal = validation.normalise_url(before + url + after)
    assert validation.normalise_url(normal) == normal
    assert validation.url_problem(normal) is None
    parts = urlsplit(normal)
    assert parts.scheme in ("http", "https") and parts.hostname is not None and parts.hostname.isascii()
    assert parts.hostname == parts.hostname.lower() and not parts.fragment and parts.path.startswith("/")
    assert parts.port == urlsplit(url).port  # the port is kept as written


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("  HTTP://Bücher.Example/Path?Q=1#frag \t", "http://xn--bcher-kva.example/Path?Q=1"),
        ("https://例え.テスト", "https://xn--r8jz45g.xn--zckzah/"),
        ("http://USER:Pw@Example.COM:8080", "http://USER:Pw@example.com:8080/"),
        ("http://[::FFFF:1.2.3.4]/x", "http://[::ffff:1.2.3.4]/x"),
    ],
)
def test_normalise_url(url: str, normal: str) -> None:
    assert validate_submission({"urls": [url]}).urls == (normal,)


def test_duplicates_are_kept_and_counted() -> None:
    request = validate_submission({"urls": ["http://a.example/", "HTTP://A.example", "http://b.example/", " http://a.example/#x"]})
    assert request.urls == ("http://a.example/",) * 2 + ("http://b.example/", "http://a.example/")
    assert request.duplicates == 2


def test_a_url_too_long_once_in_punycode_names_its_line(settings: Any) -> None:
    settings.JOBS_MAX_URL_LENGTH = 30
    text = "http://a.example/\nhttp://ääääääääää.example/\n"
    assert errors_of({"urls": parse_url_lines(text)})["urls"] == [
        {"index": 1, "line": 2, "value": "http://ääääääääää.example/",
         "error": "longer than 30 characters once its host is in ASCII (IDNA)"}
    ]  # fmt: skip


@hsettings(deadline=None, max_examples=300)
@given(st.lists(valid_urls(), max_size=20), st.lists(st.tuples(st.integers(0, 20), garbage), min_size=1, max_size=5))
def test_garbage_is_rejected_at_its_index(urls: list[str], insertions: list[tuple[int, Any]]) -> None:
    items: list[Any] = list(urls)
    for where, bad in insertions:
        items.insert(min(where, len(items)), bad)
    bad_indexes = [i for i, item in enumerate(items) if not (isinstance(item, str) and item in urls)]
    errors = errors_of({"urls": items})
    assert [item["index"] for item in errors["urls"]] == bad_indexes
    assert set(errors) == {"urls"}


# --- submit and cancel ----------------------------------------------------------------------------


@pytest.fixture
def owner(db: None) -> Any:
    return get_user_model().objects.create_user("ann", password="pw")


def test_submit_stores_job_and_pending_rows_in_order(owner: Any) -> None:
    urls = ["http://b.example/", "http://a.example/", "http://b.example/"]
    job = validation.submit(owner, validate_submission({"urls": urls, "name": "x"}))
    job.refresh_from_db()
    assert (job.owner, job.name, job.status, job.total) == (owner, "x", "queued", 3)
    assert (job.concurrency, job.timeout) == (10, 10.0)
    rows = list(Result.objects.filter(job=job).values_list("position", "url", "outcome"))
    assert rows == [
        (0, "http://b.example/", "pending"),
        (1, "http://a.example/", "pending"),
        (2, "http://b.example/", "pending"),
    ]


def test_cancel_queued_job(owner: Any) -> None:
    job = validation.submit(owner, validate_submission({"urls": ["http://a.example/", "http://b.example/"]}))
    cancelled = validation.cancel(job.id)
    assert (cancelled.status, cancelled.cancelled) == ("cancelled", 2)
    assert set(Result.objects.filter(job=job).values_list("outcome", flat=True)) == {"cancelled"}


@pytest.mark.django_db(transaction=True)
async def test_asubmit_wakes_workers_and_updates_the_owner_pages() -> None:
    user = await get_user_model().objects.acreate(username="bob")
    layer = get_channel_layer()
    listener = await layer.new_channel()
    await layer.group_add(groups.WAKEUP_GROUP, listener)
    await layer.group_add(groups.user_group(user.pk), listener)

    job = await validation.asubmit(user, validate_submission({"urls": ["http://a.example/"]}))

    assert await Job.objects.filter(pk=job.pk, status="queued").aexists()
    received = [await receive(layer, listener), await receive(layer, listener)]
    assert {"type": "worker.wakeup"} in received
    (update,) = [message for message in received if message["type"] == "job.update"]
    assert update["job"]["id"] == str(job.id)
    assert update["job"]["status"] == "queued"


@pytest.mark.django_db(transaction=True)
async def test_acancel_publishes_the_new_state() -> None:
    user = await get_user_model().objects.acreate(username="cid")
    job = await validation.asubmit(user, validate_submission({"urls": ["http://a.example/"]}))
    layer = get_channel_layer()
    listener = await layer.new_channel()
    await layer.group_add(groups.user_group(user.pk), listener)

    cancelled = await validation.acancel(job.id)

    assert cancelled.status == "cancelled"
    message = await receive(layer, listener)
    assert (message["type"], message["job"]["id"], message["job"]["status"]) == ("job.update", str(job.id), "cancelled")
