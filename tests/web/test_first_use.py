"""Issue 19 without a browser: skip invalid lines (validation, API, form, CLI), the result detail endpoint,
the form's hints, the favicon, and the admin's job page."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from jobs.exceptions import SubmissionError
from jobs.models import Job, Result
from jobs.submission import validation
from jobs.submission.parsing import parse_url_lines
from tests.web.schema_check import assert_documented

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("memory_layer")]

TEXT = "https://a.example/\nftp://b.example/\n\nnot a url\nhttps://c.example/x\n"


def test_skip_invalid_keeps_the_good_lines_and_lists_the_others() -> None:
    with pytest.raises(SubmissionError):
        validation.validate_submission({"urls": parse_url_lines(TEXT)})
    request = validation.validate_submission({"urls": parse_url_lines(TEXT), "skip_invalid": True})
    assert request.urls == ("https://a.example/", "https://c.example/x")
    assert request.skipped_urls == 2
    assert [(item["line"], item["index"], item["value"]) for item in request.skipped] == [
        (2, 1, "ftp://b.example/"), (4, 2, "not a url")
    ]  # fmt: skip
    # Nothing valid, or a problem with the list itself, still refuses the submission.
    with pytest.raises(SubmissionError) as refused:
        validation.validate_submission({"urls": ["nope", "ftp://x/"], "skip_invalid": True})
    assert len(refused.value.errors["urls"]) == 2
    with pytest.raises(SubmissionError) as bad_flag:
        validation.validate_submission({"urls": ["https://a.example/"], "skip_invalid": "maybe"})
    assert "skip_invalid" in bad_flag.value.errors


def test_the_api_skips_and_the_job_says_what_it_skipped(ann_client: Client) -> None:
    body = {"urls": ["https://a.example/", "ftp://b.example/", 7], "skip_invalid": True}
    response = ann_client.post("/api/jobs/", json.dumps(body), content_type="application/json")
    assert response.status_code == 201, response.content
    assert_documented("/api/jobs/", "POST", response)
    created = response.json()
    assert (created["total"], created["skipped_urls"]) == (1, 2)
    assert [item["index"] for item in created["skipped"]] == [1, 2]
    shown = ann_client.get(f"/api/jobs/{created['id']}/")
    assert_documented("/api/jobs/{job_id}/", "GET", shown)
    assert shown.json()["skipped_urls"] == 2 and "skipped" not in shown.json()  # the same dict as the socket's
    page = ann_client.get(reverse("job_detail", kwargs={"job_id": created["id"]}))
    assert b"2 lines skipped" in page.content and b"must be a string, not a number" in page.content


def test_the_form_marks_bad_lines_and_skips_them_when_asked(ann_client: Client) -> None:
    refused = ann_client.post("/", {"urls": TEXT})
    assert refused.status_code == 400
    assert b'data-bad-lines="[2, 4]"' in refused.content
    created = ann_client.post("/", {"urls": TEXT, "skip_invalid": "on"})
    assert created.status_code == 302
    job = Job.objects.get()
    assert (job.total, job.skipped_urls, [item["line"] for item in job.skipped]) == (2, 2, [2, 4])


def test_the_cli_skips_invalid_lines_and_counts_in_words(django_user_model: Any, tmp_path: Path) -> None:
    django_user_model.objects.create_superuser(username="root", password="unused-password-1")
    path = tmp_path / "urls.txt"
    path.write_text(TEXT)
    out, err = io.StringIO(), io.StringIO()
    call_command("fetch", str(path), "--skip-invalid", stdout=out, stderr=err)
    job = Job.objects.get()
    assert job.total == 2
    assert f"Job {job.pk} queued: 2 URLs, concurrency 10. Page: http://127.0.0.1:8000/jobs/{job.pk}/" in out.getvalue()
    assert f"{path} line 2: scheme must be http or https, not 'ftp'" in err.getvalue()
    assert "Skipped 2 invalid lines" in err.getvalue()
    path.write_text("https://one.example/\n")
    call_command("fetch", str(path), stdout=(one := io.StringIO()))
    assert "queued: 1 URL, " in one.getvalue()


def test_result_detail(ann_client: Client, ann: Any, bob: Any) -> None:
    job = Job.objects.create(owner=ann, concurrency=1, timeout=5, total=3, retries=2)
    error = "connect: connection refused by 127.0.0.1:9 (the same on all 3 attempts)"
    kept = [["Content-Type", "text/plain"], ["Set-Cookie", "•••"], ["Set-Cookie", "•••"]]
    Result.objects.create(job=job, position=0, url="http://127.0.0.1:9/", outcome="failed", attempts=3,
                          error=error, error_class="connect", elapsed_ms=12)
    Result.objects.create(job=job, position=1, url="http://a.example/r", outcome="succeeded", status_code=200,
                          final_url="http://a.example/final", redirects=2, content_type="text/plain", bytes=3,
                          headers=kept)
    # A row written before headers were kept shows its Content-Type.
    Result.objects.create(job=job, position=2, url="http://a.example/o", outcome="succeeded", status_code=200,
                          content_type="text/html")
    response = ann_client.get(f"/api/jobs/{job.pk}/results/0/")
    assert response.status_code == 200
    assert_documented("/api/jobs/{job_id}/results/{position}/", "GET", response)
    detail = response.json()
    assert (detail["position"], detail["error_summary"], detail["attempt_history"]) == (
        0, "connect: connection refused by 127.0.0.1:9", ["the same on all 3 attempts"]
    )
    assert detail["request"]["headers"]["User-Agent"].startswith("batchfetch/")
    assert (detail["request"]["retries"], detail["body_url"]) == (2, None)
    redirected = ann_client.get(f"/api/jobs/{job.pk}/results/1/").json()
    assert (redirected["final_url"], redirected["redirects"]) == ("http://a.example/final", 2)
    assert redirected["response_headers"] == kept
    assert_documented("/api/jobs/{job_id}/results/{position}/", "GET", ann_client.get(f"/api/jobs/{job.pk}/results/1/"))
    older = ann_client.get(f"/api/jobs/{job.pk}/results/2/").json()
    assert (older["response_headers"], detail["response_headers"]) == ([["Content-Type", "text/html"]], [])
    assert ann_client.get(f"/api/jobs/{job.pk}/results/5/").status_code == 404
    other = Client()
    other.force_login(bob)
    assert other.get(f"/api/jobs/{job.pk}/results/0/").status_code == 404


def test_form_hints_are_readable_and_the_favicon_is_served(ann_client: Client) -> None:
    page = ann_client.get("/").content.decode()
    assert "1–1,073,741,824 (1 GiB)" in page and "e+09" not in page
    assert "Skip invalid lines" in page
    icon = ann_client.get("/favicon.ico")
    assert icon.status_code == 301 and icon["Location"].endswith("favicon.svg")


def test_the_admin_job_page_shows_every_option_and_the_live_page(admin_client: Client, ann: Any) -> None:
    job = Job.objects.create(owner=ann, concurrency=3, timeout=5, total=0, per_host=2, host_delay=0.5,
                             retries=4, max_redirects=7, max_bytes=1234, respect_robots=True, save_bodies=True)
    page = admin_client.get(reverse("admin:jobs_job_change", args=[job.pk])).content.decode()
    for label in ("Per host", "Host delay", "Retries", "Max redirects", "Max bytes", "Respect robots",
                  "Save bodies", "Open the live page", f'href="/jobs/{job.pk}/"', "favicon.svg"):
        assert label in page, label
