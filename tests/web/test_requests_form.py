"""The dashboard's .jsonl upload and request fields: a job of requests from the browser's form."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from jobs.models import Job, RequestLine
from tests.web.helpers import error_items, only_job

# As in the page tests (test_views.py): the in-memory layer and fast password hashing; `alice` is logged in.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("memory_layer", "fast_password_hashing")]

TOKEN = "Bearer form-s3cr3t"


def jsonl(*lines: Any) -> bytes:
    return "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines).encode()


def test_a_jsonl_upload_with_headers_makes_a_job_of_requests(alice: Client, user: Any) -> None:
    upload = SimpleUploadedFile("calls.jsonl", jsonl({"url": "http://a.example/1", "json": {"n": 1}},
                                                     {"url": "http://a.example/2"}))  # fmt: skip
    response = alice.post("/", {"urls": "http://pasted.example/", "file": upload, "method": "POST",
                                "headers": f"Authorization: {TOKEN}\nAccept: application/json\n"})  # fmt: skip
    job = only_job(user)
    assert response.status_code == 302
    assert (job.method, job.total, job.line_requests) == ("POST", 3, True)
    assert job.request_headers == [["Authorization", None], ["Accept", "application/json"]]
    assert [line.position for line in RequestLine.objects.filter(job=job)] == [1]  # the pasted URL is line 0
    page = alice.get(f"/jobs/{job.pk}/").content.decode()
    assert "Authorization: •••" in page and "s3cr3t" not in page


def test_bad_jsonl_lines_name_the_file_line_and_field(alice: Client) -> None:
    upload = SimpleUploadedFile("calls.jsonl", jsonl({"url": "http://a.example/"}, "{oops",
                                                     {"url": "http://a.example/", "method": "FETCH"}))  # fmt: skip
    response = alice.post("/", {"file": upload})
    assert response.status_code == 400
    items = error_items(response)
    assert items[0].startswith("calls.jsonl line 2 line: not JSON")
    assert items[1].startswith("calls.jsonl line 3 method: must be one of GET")
    assert not Job.objects.exists()


def test_a_bad_header_line_is_reported_on_the_field(alice: Client) -> None:
    response = alice.post("/", {"urls": "http://a.example/", "headers": "no colon here"})
    assert response.status_code == 400
    assert error_items(response) == ["Headers: line 1: write each header as Name: value"]


def test_a_rows_page_shows_its_request_masked_and_its_json_body_pretty(alice: Client, user: Any, settings: Any,
                                                                        tmp_path: Any) -> None:  # fmt: skip
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                                                          "OPTIONS": {"location": str(tmp_path)}}}  # fmt: skip
    upload = SimpleUploadedFile("calls.jsonl", jsonl({"url": "http://a.example/1", "json": {"n": 1}}))
    alice.post("/", {"file": upload, "method": "POST", "headers": f"Authorization: {TOKEN}", "save_bodies": "on"})
    job = only_job(user)
    name = default_storage.save(f"bodies/{job.pk}/0", ContentFile(b'{"id":7,"tags":["a","b"]}'))
    job.results.filter(position=0).update(outcome="succeeded", status_code=201, content_type="application/json",
                                          body=name, bytes=25, fetched_at=timezone.now())  # fmt: skip
    page = alice.get(f"/jobs/{job.pk}/results/0/").content.decode()
    assert "Authorization: •••" in page and "s3cr3t" not in page
    assert "POST" in page and "body 7 bytes" in page
    assert '{\n  &quot;id&quot;: 7,\n  &quot;tags&quot;: [\n    &quot;a&quot;,' in page
    assert f'href="/jobs/{job.pk}/results/0/"' in alice.get(f"/jobs/{job.pk}/").content.decode()
    assert alice.get(f"/jobs/{job.pk}/results/5/").status_code == 404
