"""Secret headers sealed at rest (jobs/crypto.py, jobs/requestdata.py) and the request lines' validation."""

from __future__ import annotations

import io
import json
from operator import attrgetter
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.test import override_settings

from jobs import checks, crypto, requestdata
from jobs.engine.requestspec import RequestSpec
from jobs.models import Job, RequestLine
from jobs.submission import requests as line_rules

TOKEN = "Bearer s3cr3t-t0ken"


def test_sealed_text_opens_and_does_not_contain_the_secret() -> None:
    sealed = crypto.seal(TOKEN)
    assert TOKEN not in sealed and "s3cr3t" not in sealed
    assert crypto.unseal(sealed) == TOKEN


def test_rotation_old_keys_open_through_the_fallbacks_and_reseal_moves_them() -> None:
    with override_settings(SECRET_KEY="old-key-" + "x" * 40):
        sealed = crypto.seal(TOKEN)
    with override_settings(SECRET_KEY="new-key-" + "y" * 40, SECRET_KEY_FALLBACKS=["old-key-" + "x" * 40]):
        assert crypto.unseal(sealed) == TOKEN
        resealed = crypto.reseal(sealed)
    with override_settings(SECRET_KEY="new-key-" + "y" * 40, SECRET_KEY_FALLBACKS=[]):
        assert crypto.unseal(resealed) == TOKEN
        with pytest.raises(crypto.SealBroken, match="SECRET_KEY_FALLBACKS"):
            crypto.unseal(sealed)


def test_stored_headers_hide_every_secret_value() -> None:
    shown, sealed = requestdata.store_headers(
        [("Authorization", TOKEN), ("Accept", "application/json"), ("X-Mine", "m1"), ("Cookie", "a=b")],
        secret={"x-mine"},
    )
    assert shown == [["Authorization", None], ["Accept", "application/json"], ["X-Mine", None], ["Cookie", None]]
    assert TOKEN not in json.dumps(shown) and TOKEN not in sealed
    assert requestdata.shown_headers(shown) == {
        "Authorization": "•••", "Accept": "application/json", "X-Mine": "•••", "Cookie": "•••",
    }  # fmt: skip


def test_job_and_line_specs_merge_and_unseal() -> None:
    shown, sealed = requestdata.store_headers([("Authorization", TOKEN), ("Accept", "a/b")])
    job = Job(method="POST", request_headers=shown, sealed_headers=sealed, request_body='{"all":1}')
    spec = requestdata.job_spec(job)
    assert spec == RequestSpec(method="POST", headers=(("Authorization", TOKEN), ("Accept", "a/b")), body=b'{"all":1}')
    line_shown, line_sealed = requestdata.store_headers([("accept", "text/plain"), ("X-Mine", "m")], secret={"x-mine"})
    line = RequestLine(position=3, method="PUT", headers=line_shown, sealed_headers=line_sealed, body="one")
    merged = requestdata.line_specs(job, [attrgetter(*requestdata.LINE_FIELDS)(line)])[3]
    assert merged.method == "PUT" and merged.body == b"one"
    assert merged.headers == (("Authorization", TOKEN), ("accept", "text/plain"), ("X-Mine", "m"))
    assert "x-mine" in merged.secret and "authorization" in merged.secret
    summary = requestdata.line_summary(job, line)
    assert summary["headers"] == {"Authorization": "•••", "accept": "text/plain", "X-Mine": "•••"}
    assert summary["method"] == "PUT" and summary["body_sha256"] == requestdata.body_sha256("one")


def test_a_plain_job_has_no_spec() -> None:
    assert requestdata.job_spec(Job(method="GET", request_headers=[], request_body=None)) is None


def test_a_seal_from_another_key_fails_the_spec_clearly() -> None:
    with override_settings(SECRET_KEY="gone-" + "z" * 40):
        shown, sealed = requestdata.store_headers([("Authorization", TOKEN)])
    with pytest.raises(crypto.SealBroken):
        requestdata.job_spec(Job(method="GET", request_headers=shown, sealed_headers=sealed))


def test_after_redirect_rules() -> None:
    a, b = httpx.URL("http://127.0.0.1:1/x"), httpx.URL("http://127.0.0.1:2/y")
    spec = RequestSpec(method="POST", headers=(("Authorization", TOKEN), ("Content-Type", "t")), body=b"1")
    assert spec.after_redirect(307, a, a.join("/z")) is spec
    assert spec.after_redirect(302, a, a.join("/z")) == RequestSpec(method="GET", headers=(("Authorization", TOKEN),))
    assert spec.after_redirect(308, a, b).headers == (("Content-Type", "t"),)
    head = RequestSpec(method="HEAD")
    assert head.after_redirect(303, a, a).method == "HEAD"
    assert RequestSpec(method="PUT", body=b"1").after_redirect(303, a, a).method == "GET"
    assert RequestSpec(method="PUT", body=b"1").after_redirect(302, a, a).method == "PUT"
    # Default ports are the same origin as no port.
    assert spec.after_redirect(307, httpx.URL("http://h/"), httpx.URL("http://h:80/")).headers == spec.headers


# --- validation of the lines ------------------------------------------------------------------------------


def _url_check(url: str) -> tuple[str, str | None]:
    return (url, None) if url.startswith("http://") else ("", "not an absolute URL")


@override_settings(JOBS_MAX_REQUEST_BODY_BYTES=100)
def test_every_bad_line_is_named_by_index_line_and_field() -> None:
    lines = [json.dumps({"url": f"http://x/{i}"}) for i in range(10)]
    lines[6] = json.dumps({"url": "http://x/", "method": "FETCH"})
    lines[2] = json.dumps({"url": "http://x/", "headers": {"X-Bad": "a\nInjected: 1"}})
    lines[3] = json.dumps({"url": "http://x/", "json": {"a": 1}, "body": "b"})
    lines[4] = '{"url": "http://x/", oops'
    lines[8] = json.dumps({"url": "http://x/", "body": "y" * 101})
    checked = line_rules.check_lines("\n".join(lines), secret=frozenset(), url_check=_url_check)
    found = {(e["line"], e["field"]) for e in checked.errors}
    assert found == {(7, "method"), (3, "headers"), (4, "json"), (5, "line"), (9, "body")}
    assert {e["index"] for e in checked.errors} == {6, 2, 3, 4, 8}
    assert len(checked.urls) == 5


def test_good_lines_store_only_their_overrides() -> None:
    checked = line_rules.check_lines(
        [{"url": "http://x/0"}, {"url": "http://x/1", "json": [1], "headers": {"X-Api-Key": "key-value-42"}}, "http://x/2"],
        secret=frozenset(), url_check=_url_check,
    )  # fmt: skip
    assert checked.errors == [] and checked.urls == ["http://x/0", "http://x/1", "http://x/2"]
    [record] = checked.records
    assert record.position == 1 and record.body == "[1]" and record.method == ""
    assert record.headers == [["X-Api-Key", None], ["Content-Type", "application/json"]]
    assert "key-value-42" not in record.sealed_headers


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Host": "h"}, "set by the client"),
        ({"Transfer-Encoding": "chunked"}, "set by the client"),
        ({"Bad Name": "v"}, "not a valid header name"),
        ({"X": "caf\u00e9"}, "visible ASCII"),
        ({"X": 1}, "must be a string"),
        ([["X", "1"], ["x", "2"]], "given twice"),
        ("Accept: x", "must be an object"),
    ],
)
def test_header_rules(headers: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        line_rules.clean_headers(headers)


@pytest.mark.django_db
def test_reseal_headers_moves_every_sealed_value_to_the_current_key(django_user_model: Any) -> None:
    old, new = "old-" + "a" * 40, "new-" + "b" * 40
    owner = django_user_model.objects.create_user(username="sealer")
    with override_settings(SECRET_KEY=old):
        shown, sealed = requestdata.store_headers([("Authorization", TOKEN)])
        job = Job.objects.create(owner=owner, concurrency=1, timeout=1, request_headers=shown, sealed_headers=sealed)
        RequestLine.objects.create(job=job, position=0, headers=shown, sealed_headers=sealed)
    with override_settings(SECRET_KEY=new, SECRET_KEY_FALLBACKS=[old]):
        call_command("reseal_headers", stdout=io.StringIO())
    with override_settings(SECRET_KEY=new, SECRET_KEY_FALLBACKS=[]):
        job.refresh_from_db()
        assert requestdata.job_spec(job).headers == (("Authorization", TOKEN),)  # type: ignore[union-attr]
        line = RequestLine.objects.get(job=job)
        row = attrgetter(*requestdata.LINE_FIELDS)(line)
        assert requestdata.line_specs(job, [row])[0].headers == (("Authorization", TOKEN),)


@override_settings(JOBS_MAX_REQUEST_BODY_BYTES=-1)
def test_a_negative_body_limit_is_a_check_error() -> None:
    assert "jobs.E008" in [error.id for error in checks.check_limits()]
