"""Input validation: every field checked, every problem reported at once (jobs/submission/validation.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from jobs.exceptions import SubmissionError
from jobs.submission import validation
from jobs.submission.parsing import parse_url_lines
from jobs.submission.urls import MAX_ECHOED_VALUE, normalise_url
from jobs.submission.validation import validate_submission
from tests.submission.conftest import garbage, valid_urls


def errors_of(data: Any) -> dict[str, Any]:
    with pytest.raises(SubmissionError) as info:
        validate_submission(data)
    return info.value.errors



def test_pasted_bad_line_is_named_by_line_and_index() -> None:
    urls = parse_url_lines("http://ok.example/\n\n# note\nnot a url\nhttp://ok.example/2\nftp://x.example/")
    errors = errors_of({"urls": urls})
    assert errors == {
        "urls": [
            {"index": 1, "line": 4, "value": "not a url", "error": "contains whitespace"},
            {"index": 3, "line": 6, "value": "ftp://x.example/", "error": "scheme must be http or https, not 'ftp'"},
        ]
    }



# --- the other fields ------------------------------------------------------------------------


def test_defaults_apply_to_missing_and_null_fields(settings: Any) -> None:
    settings.JOBS_DEFAULT_CONCURRENCY = 7
    settings.JOBS_DEFAULT_TIMEOUT = 2.5
    request = validate_submission({"urls": ["http://a.example/"], "name": None, "timeout": None})
    assert request == validation.JobRequest(
        urls=("http://a.example/",), name="", concurrency=7, timeout=2.5,
        options={"per_host": 8, "host_delay": 0.0, "retries": 2, "max_redirects": 10, "max_bytes": 10 * 1024 * 1024,
                 "respect_robots": False, "save_bodies": False, "url_deadline": None, "job_deadline": None,
                 "per_host_rate": None, "autothrottle": False},
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
    assert len(item["value"]) == MAX_ECHOED_VALUE
    assert url.startswith(item["value"][:-1])


# --- properties ---------------------------------------------------------------------------------

@hsettings(deadline=None, max_examples=300)
@given(st.lists(valid_urls(), min_size=1, max_size=30))
def test_any_valid_url_list_is_accepted(urls: list[str]) -> None:
    request = validate_submission({"urls": urls})
    assert request.urls == tuple(normalise_url(url) for url in urls)
    assert request.duplicates == len(urls) - len(set(request.urls))


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
