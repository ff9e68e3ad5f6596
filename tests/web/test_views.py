"""HTML pages: login, the dashboard's submit form, the live job page, static files."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from django.utils import timezone

from jobs.models import Job, Result
from jobs.queue.control import enqueue_job
from tests.web.helpers import error_items, only_job

# Pages only publish best-effort updates (nothing here listens to them), and users log in by password.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("memory_layer", "fast_password_hashing")]


@pytest.fixture
def other_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="mallory", password="s3cret-pass!")


class TagCollector(HTMLParser):
    """Collects start tags with their attributes, and the text of <textarea> and <script> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: dict[str, str] = {}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("textarea", "script"):
            self._open = dict(attrs).get("id") or tag
            self.texts.setdefault(self._open, "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("textarea", "script"):
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.texts[self._open] += data

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def parse(response: Any) -> TagCollector:
    collector = TagCollector()
    collector.feed(response.content.decode())
    return collector


def urls_of(job: Job) -> list[str]:
    return list(job.results.order_by("position").values_list("url", flat=True))


# --- login and access -------------------------------------------------------------------


def test_login_page_renders_a_real_form(client: Client) -> None:
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    page = parse(response)
    assert page.find("input", name="username")
    assert page.find("input", name="password", type="password")
    assert page.find("label", **{"for": "id_username"}) and page.find("label", **{"for": "id_password"})
    assert page.find("link", rel="stylesheet", href="/static/css/app.css")


def test_login_then_logout_by_post(client: Client, user: Any) -> None:
    response = client.post("/accounts/login/", {"username": "alice", "password": "s3cret-pass!"})
    assert response.status_code == 302 and response["Location"] == "/"
    dashboard = client.get("/")
    assert dashboard.status_code == 200
    logout_forms = parse(dashboard).find("form", method="post", action="/accounts/logout/")
    assert logout_forms, "the logout link must be a POST form"
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_bad_password_shows_an_error(client: Client, user: Any) -> None:
    response = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


@pytest.mark.parametrize("path", ["/", "/jobs/00000000-0000-0000-0000-000000000001/"])
def test_pages_redirect_anonymous_users_to_login(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


# --- dashboard ---------------------------------------------------------------------------


def test_dashboard_form_has_defaults_and_labels(alice: Client) -> None:
    response = alice.get("/")
    assert response.status_code == 200
    page = parse(response)
    assert page.find("input", name="concurrency", value="10", min="1", max="1000")
    assert page.find("input", name="timeout", value="10")
    assert page.find("input", type="file", name="file")
    assert page.find("form", method="post", enctype="multipart/form-data")
    for field in ("id_urls", "id_file", "id_name", "id_concurrency", "id_timeout"):
        assert page.find("label", **{"for": field}), field


def test_dashboard_lists_only_my_jobs_newest_first(alice: Client, user: Any, other_user: Any) -> None:
    older = enqueue_job(owner=user, urls=["http://a.test/"], name="older job", concurrency=1, timeout=1)
    newer = enqueue_job(owner=user, urls=["http://a.test/"] * 4, name="newer job", concurrency=1, timeout=1)
    Job.objects.filter(pk=older.pk).update(created_at=timezone.now() - timezone.timedelta(minutes=5))
    enqueue_job(owner=other_user, urls=["http://a.test/"], name="not mine", concurrency=1, timeout=1)
    Result.objects.filter(job=newer, position__lt=1).update(outcome=Result.Outcome.SUCCEEDED)
    Job.objects.filter(pk=newer.pk).update(succeeded=1, status=Job.Status.RUNNING)

    page = parse(alice.get("/"))
    rows = [attrs["data-job-id"] for attrs in page.find("tr") if attrs.get("data-job-id")]
    assert rows == [str(newer.pk), str(older.pk)]
    bar = page.find("progress", **{"aria-valuenow": "1", "aria-valuemax": "4"})
    assert bar and bar[0]["aria-valuetext"] == "1 of 4 URLs done (25%)"
    table = page.find("table", id="jobs-table")[0]
    assert table["data-ws-path"] == "/ws/jobs/"


def test_pages_have_no_inline_scripts(alice: Client, user: Any) -> None:
    job = enqueue_job(owner=user, urls=["http://a.test/"], name="j", concurrency=1, timeout=1)
    for path in ("/", f"/jobs/{job.pk}/"):
        scripts = parse(alice.get(path)).find("script")
        assert scripts
        for attrs in scripts:
            assert attrs.get("src") or attrs.get("type") == "application/json", (path, attrs)


def test_pasted_urls_create_a_job_and_redirect_to_it(alice: Client, user: Any) -> None:
    text = "https://a.example/\n\n# a comment\n  http://b.example/path?q=1  \r\nhttps://a.example/\n"
    response = alice.post("/", {"urls": text, "name": "my batch", "concurrency": "25", "timeout": "2.5"})
    job = only_job(user)
    assert response.status_code == 302
    assert response["Location"] == f"/jobs/{job.pk}/"
    assert (job.name, job.concurrency, job.timeout, job.total, job.status) == ("my batch", 25, 2.5, 3, "queued")
    assert urls_of(job) == ["https://a.example/", "http://b.example/path?q=1", "https://a.example/"]


def test_blank_options_take_the_defaults(alice: Client, user: Any) -> None:
    alice.post("/", {"urls": "http://a.example/", "name": "", "concurrency": "", "timeout": ""})
    job = only_job(user)
    assert (job.concurrency, job.timeout, job.name) == (10, 10.0, "")


def test_txt_upload_creates_a_job_named_after_the_file(alice: Client, user: Any) -> None:
    upload = SimpleUploadedFile("targets.txt", b"\xef\xbb\xbfhttp://a.example/\nhttp://b.example/\n", "text/plain")
    response = alice.post("/", {"urls": "", "file": upload, "concurrency": "10", "timeout": "10"})
    job = only_job(user)
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert job.name == "targets.txt"
    assert urls_of(job) == ["http://a.example/", "http://b.example/"]


def test_csv_upload_reads_the_url_column(alice: Client, user: Any) -> None:
    content = b'label,url\nfirst,http://a.example/\n"with, comma",https://b.example/x\n'
    upload = SimpleUploadedFile("list.csv", content, "text/csv")
    response = alice.post("/", {"file": upload, "name": "from csv", "concurrency": "3", "timeout": "1"})
    job = only_job(user)
    assert response.status_code == 302
    assert (job.name, job.concurrency) == ("from csv", 3)
    assert urls_of(job) == ["http://a.example/", "https://b.example/x"]


def test_pasted_and_uploaded_urls_are_combined_in_order(alice: Client, user: Any) -> None:
    upload = SimpleUploadedFile("more.txt", b"http://file.example/1\nhttp://file.example/2\n")
    alice.post("/", {"urls": "http://pasted.example/", "file": upload, "name": "both"})
    assert urls_of(only_job(user)) == ["http://pasted.example/", "http://file.example/1", "http://file.example/2"]


def test_bad_line_is_named_and_the_textarea_is_kept(alice: Client, user: Any) -> None:
    text = "http://ok.example/1\nhttp://ok.example/2\n\nftp://files.example/x.iso\nhttp://ok.example/<3>&\n"
    response = alice.post("/", {"urls": text, "name": "keep me", "concurrency": "7", "timeout": "3"})
    assert response.status_code == 400
    assert not Job.objects.exists()
    assert error_items(response) == ["line 4: scheme must be http or https, not 'ftp' (ftp://files.example/x.iso)"]
    page = parse(response)
    # Django's Textarea starts its content with a newline, which browsers drop.
    assert page.texts["id_urls"] == "\n" + text, "the pasted text must come back unchanged"
    assert page.find("input", name="name", value="keep me")
    assert page.find("input", name="concurrency", value="7")
    assert page.find("textarea", id="id_urls")[0]["aria-invalid"] == "true"


def test_every_bad_line_is_listed(alice: Client) -> None:
    text = "not a url\nhttp://ok.example/\nhttp://\njavascript:alert(1)\n"
    items = error_items(alice.post("/", {"urls": text}))
    assert [item.split(":")[0] for item in items] == ["line 1", "line 3", "line 4"]
    assert items[2].startswith("line 4: not an absolute URL")


def test_bad_line_in_a_file_names_the_file_and_line(alice: Client, user: Any) -> None:
    upload = SimpleUploadedFile("urls.csv", b"url\nhttp://a.example/\nnope\n", "text/csv")
    response = alice.post("/", {"urls": "http://pasted.example/", "file": upload})
    assert response.status_code == 400
    assert error_items(response) == [
        "urls.csv line 3: not an absolute URL (must start with http:// or https://) (nope)"
    ]
    assert "Choose the file again" in response.content.decode()
    assert parse(response).texts["id_urls"].strip() == "http://pasted.example/"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"urls": ""}, "Paste at least one URL, or upload a .txt or .csv file."),
        ({"urls": "# only a comment\n\n"}, "Paste at least one URL, or upload a .txt or .csv file."),
        ({"urls": "http://a.example/", "concurrency": "0"}, "Concurrency: must be an integer from 1 to 1000"),
        ({"urls": "http://a.example/", "concurrency": "1001"}, "Concurrency: must be an integer from 1 to 1000"),
        ({"urls": "http://a.example/", "concurrency": "ten"}, "Concurrency: must be an integer from 1 to 1000"),
        (
            {"urls": "http://a.example/", "timeout": "0"},
            "Timeout per URL: must be a number of seconds greater than 0 and at most 300",
        ),
        ({"urls": "http://a.example/", "name": "x" * 201}, "Name: must be at most 200 characters"),
    ],
)
def test_invalid_form_input_is_reported_and_nothing_is_created(
    alice: Client, data: dict[str, str], expected: str
) -> None:
    response = alice.post("/", data)
    assert response.status_code == 400
    assert error_items(response) == [expected]
    assert not Job.objects.exists()


def test_upload_must_be_txt_or_csv_utf8_text(alice: Client) -> None:
    pdf = SimpleUploadedFile("urls.pdf", b"http://a.example/\n")
    assert error_items(alice.post("/", {"file": pdf})) == ["urls.pdf: must be a .txt, .csv or .jsonl file"]
    latin1 = SimpleUploadedFile("urls.txt", b"http://a.example/\nhttp://caf\xe9.example/\n")
    assert error_items(alice.post("/", {"file": latin1})) == ["urls.txt: line 2: not UTF-8 text (byte 0xe9)"]
    empty_list = SimpleUploadedFile("urls.txt", b"# nothing here\n")
    assert error_items(alice.post("/", {"file": empty_list})) == ["urls.txt: no URLs found in the file."]
    assert not Job.objects.exists()


@override_settings(JOBS_MAX_URLS=3)
def test_too_many_urls(alice: Client) -> None:
    items = error_items(alice.post("/", {"urls": "\n".join(f"http://a.example/{i}" for i in range(5))}))
    assert items == ["Too many URLs: 5 (at most 3)."]


# --- job page ------------------------------------------------------------------------------


def finish_some(job: Job) -> None:
    """Give the job two fetched rows (one failure) and matching counters, as the worker would."""
    now = timezone.now()
    Result.objects.filter(job=job, position=0).update(
        outcome=Result.Outcome.SUCCEEDED, status_code=200, bytes=512, elapsed_ms=12, attempts=1, fetched_at=now
    )
    Result.objects.filter(job=job, position=2).update(
        outcome=Result.Outcome.FAILED, status_code=None, bytes=0, elapsed_ms=3000, attempts=1,
        error="timeout: no answer within 3 s", fetched_at=now + timezone.timedelta(seconds=1),
    )
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, started_at=now, succeeded=1, failed=1)


def test_job_page_shows_progress_counts_and_results(alice: Client, user: Any) -> None:
    urls = ["http://a.example/0", "http://a.example/1", "http://a.example/<2>"]
    job = enqueue_job(owner=user, urls=urls, name="live one", concurrency=2, timeout=3)
    finish_some(job)
    response = alice.get(f"/jobs/{job.pk}/")
    assert response.status_code == 200
    page = parse(response)
    body = response.content.decode()

    root = page.find("div", id="job-page")[0]
    assert root["data-ws-path"] == f"/ws/jobs/{job.pk}/"
    assert root["data-cancel-url"] == f"/api/jobs/{job.pk}/cancel/"
    bar = page.find("progress", id="job-progress")[0]
    assert (bar["value"], bar["aria-valuenow"], bar["aria-valuemax"]) == ("2", "2", "3")
    assert page.find("p", id="job-summary-live", **{"aria-live": "polite"})
    assert page.find("progress", id="job-progress", **{"aria-labelledby": "job-summary"})
    assert 'id="stat-succeeded">1<' in body and 'id="stat-failed">1<' in body and 'id="stat-total">3<' in body
    assert page.find("a", href=f"/api/jobs/{job.pk}/results.csv")
    assert page.find("a", href=f"/api/jobs/{job.pk}/results.jsonl")
    assert "disabled" not in page.find("button", id="cancel-button")[0]

    # Fetched rows only, newest first; the URL is escaped, never markup.
    rows = [attrs["data-position"] for attrs in page.find("tr") if attrs.get("data-position")]
    assert rows == ["2", "0"]
    assert "http://a.example/&lt;2&gt;" in body
    data = json.loads(page.texts["job-data"])
    assert data["id"] == str(job.pk) and data["status"] == "running" and data["done"] == 2


def test_job_page_of_another_user_is_404(client: Client, user: Any, other_user: Any) -> None:
    job = enqueue_job(owner=user, urls=["http://a.example/"], name="secret", concurrency=1, timeout=1)
    client.force_login(other_user)
    assert client.get(f"/jobs/{job.pk}/").status_code == 404
    assert client.post(f"/jobs/{job.pk}/", {"action": "cancel"}).status_code == 404
    assert Job.objects.get(pk=job.pk).status == Job.Status.QUEUED
    assert client.get("/jobs/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_cancel_button_without_javascript_cancels(alice: Client, user: Any) -> None:
    job = enqueue_job(owner=user, urls=["http://a.example/"] * 3, name="stop me", concurrency=1, timeout=1)
    response = alice.post(f"/jobs/{job.pk}/", {"action": "cancel"})
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    job.refresh_from_db()
    assert (job.status, job.cancelled) == (Job.Status.CANCELLED, 3)
    page = parse(alice.get(f"/jobs/{job.pk}/"))
    assert "disabled" in page.find("button", id="cancel-button")[0]


def test_cancel_button_is_disabled_for_finished_jobs(alice: Client, user: Any) -> None:
    job = enqueue_job(owner=user, urls=["http://a.example/"], name="done", concurrency=1, timeout=1)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.COMPLETED, finished_at=timezone.now())
    button = parse(alice.get(f"/jobs/{job.pk}/")).find("button", id="cancel-button")[0]
    assert "disabled" in button


# --- static files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "marker"),
    [
        ("/static/js/job.js", "text/javascript", "use strict"),
        ("/static/js/live.js", "text/javascript", "LiveSocket"),
        ("/static/js/dashboard.js", "text/javascript", "use strict"),
        ("/static/css/app.css", "text/css", "system-ui"),
    ],
)
def test_static_files_are_served_by_whitenoise_with_debug_off(
    path: str, content_type: str, marker: str, tmp_path: Any
) -> None:
    # As daphne runs alone with DJANGO_DEBUG=0: no autorefresh, files indexed from the finders at
    # start-up (STATIC_ROOT exists but collectstatic has not run). A fresh Client builds the
    # middleware after the override, since WhiteNoise reads its settings then.
    with override_settings(DEBUG=False, WHITENOISE_AUTOREFRESH=False, STATIC_ROOT=tmp_path):
        response = Client().get(path)
        assert response.status_code == 200
        assert response["Content-Type"].startswith(content_type)
        assert marker in b"".join(response.streaming_content).decode()


def test_page_links_the_static_files_it_needs(alice: Client) -> None:
    page = parse(alice.get("/"))
    assert [attrs["src"] for attrs in page.find("script") if attrs.get("src")] == [
        "/static/js/live.js",
        "/static/js/dashboard.js",
        "/static/js/badlines.js",
    ]



def test_job_page_links_its_controls_and_labels_them(alice: Client, user: Any) -> None:
    job = enqueue_job(owner=user, urls=["http://a.example/"], name="controls", concurrency=1, timeout=1)
    page = parse(alice.get(f"/jobs/{job.pk}/"))
    root = page.find("div", id="job-page")[0]
    for action, path in (("pause", "pause/"), ("resume", "resume/"), ("rerun", "rerun-failed/"), ("stats", "stats/"),
                         ("results", "results/")):
        assert root[f"data-{action}-url"] == f"/api/jobs/{job.pk}/{path}"
    for control in ("results-filter", "results-search"):
        assert page.find("label", **{"for": control}), control
    assert page.find("dd", id="stat-pending")
    assert page.find("svg", id="throughput-chart", role="img")
    assert page.find("button", id="pause-button") and page.find("button", id="rerun-button")


def test_fetch_options_from_the_form(alice: Client, user: Any) -> None:
    page = parse(alice.get("/"))
    assert page.find("input", name="per_host", type="number", value="8")
    assert page.find("input", name="respect_robots", type="checkbox")

    alice.post("/", {"urls": "http://a.example/", "per_host": "2", "host_delay": "0.5", "retries": "0",
                     "max_redirects": "3", "max_bytes": "5000", "respect_robots": "on", "save_bodies": "on"})
    job = only_job(user)
    assert (job.per_host, job.host_delay, job.retries, job.max_redirects, job.max_bytes) == (2, 0.5, 0, 3, 5000)
    assert job.respect_robots and job.save_bodies


def test_bad_fetch_option_in_the_form_names_the_field(alice: Client, user: Any) -> None:
    response = alice.post("/", {"urls": "http://a.example/", "retries": "99"})
    assert response.status_code == 400
    assert "Retries: must be an integer from 0 to 10" in error_items(response)
    assert not Job.objects.filter(owner=user).exists()


def test_job_page_shows_the_fetch_options(alice: Client, user: Any) -> None:
    alice.post("/", {"urls": "http://a.example/\nhttp://A.example", "per_host": "3", "host_delay": "0.5",
                     "save_bodies": "on", "respect_robots": "on"})
    job = only_job(user)
    body = alice.get(f"/jobs/{job.pk}/").content.decode()
    for text in ("3 per host, 0.5 s apart", "Retries 2", "Redirects ≤ 10", "Bodies ≤ 10.0\xa0MB",
                 "Respects robots.txt", f'href="/api/jobs/{job.pk}/bodies.zip"', "1 duplicate URL<"):
        assert text in body, text
