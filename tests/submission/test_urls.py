"""The URL rules and normalisation (jobs/submission/urls.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from jobs.submission import urls
from tests.submission.conftest import valid_urls

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
    assert urls.url_problem(url) is None


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
    assert urls.url_problem(url) == problem


def test_url_length_limit(settings: Any) -> None:
    settings.JOBS_MAX_URL_LENGTH = 30
    ok = "http://example.com/" + "x" * 11
    assert len(ok) == 30
    assert urls.url_problem(ok) is None
    assert urls.url_problem(ok + "x") == "longer than 30 characters"


@hsettings(deadline=None, max_examples=300)
@given(valid_urls(), st.text(" \t", max_size=3), st.text(" \t\r\n", max_size=3))
def test_normalisation_is_idempotent_valid_and_ascii(url: str, before: str, after: str) -> None:
    normal = urls.normalise_url(before + url + after)
    assert urls.normalise_url(normal) == normal
    assert urls.url_problem(normal) is None
    parts = urlsplit(normal)
    assert parts.scheme in ("http", "https") and parts.hostname is not None and parts.hostname.isascii()
    assert parts.hostname == parts.hostname.lower() and not parts.fragment and parts.path.startswith("/")
    assert parts.port == urlsplit(url).port  # the port is kept as written
