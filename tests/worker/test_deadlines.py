"""Deadlines: `url_deadline` bounds one URL over all its attempts and waits, `job_deadline` a whole job.

The behaviour is proven on real parts: the `runworker` process, the test
database and a loopback target that answers 503 with `Retry-After: 1` forever
(/unavailable) or after a delay (/delay/<ms>). Validation goes through the
JSON API and the form.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from jobs.models import Job, Result
from jobs.queue import claims, control, records
from jobs.submission.validation import SubmissionError, validate_submission
from jobs.web.forms import JobSubmitForm
from tests import services
from tests.conftest import MEMORY_LAYER
from tests.target import TargetServer
from tests.worker.conftest import assert_counters_match_rows, start_worker, wait_until

URLS = ["http://a.example/", "http://b.example/"]


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


def enqueue(owner: Any, urls: list[str], *, concurrency: int, timeout: float = 10, **options: Any) -> Job:
    return control.enqueue_job(
        owner=owner, urls=urls, name="deadline", concurrency=concurrency, timeout=timeout, options=options
    )


def run_batch_worker(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", "runworker", "--batch", "--concurrency", "200"],
        env=env, cwd=services.BASE_DIR, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stderr


# --- the URL deadline ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_url_deadline_ends_each_url_within_its_deadline_over_retries_and_retry_after_waits(
    owner: Any, target: TargetServer, live_database_url: str, redis_url: str
) -> None:
    """Without the deadline, 10 retries 1 s apart would take each URL over 10 s."""
    urls = [target.url(f"/unavailable?i={i}") for i in range(20)]
    job = enqueue(owner, urls, concurrency=20, per_host=20, retries=10, url_deadline=2.5)
    env = services.product_env(database_url=live_database_url, redis_url=redis_url)
    log = run_batch_worker(env)

    job.refresh_from_db()
    assert (job.status, job.failed, job.error) == (Job.Status.COMPLETED, 20, ""), log  # URL failures, not the job's
    rows = list(Result.objects.filter(job=job))
    for row in rows:
        assert (row.outcome, row.error_class) == ("failed", "deadline")
        # 503 when the deadline fell in a wait; None when it cut the third attempt short (a loaded machine).
        assert row.status_code in (503, None), row.status_code
        assert 2500 <= row.elapsed_ms <= 2800, row.elapsed_ms
        # At most at 0, 1 and 2 s (Retry-After: 1); the shared per-host pause a 503's Retry-After sets for
        # every request to the host (README "Politeness across workers") may space them further.
        assert row.attempts in (2, 3), (row.attempts, row.error)
        assert row.error.startswith("deadline: not finished within the URL deadline of 2.5 s"), row.error
        assert "http_status: 503 Service Unavailable" in row.error, row.error
    # Each URL sent its first request; a last attempt may have been cut while it waited for the paused host.
    assert 20 <= target.stats().requests <= sum(row.attempts for row in rows)
    assert_counters_match_rows(job)


# --- the job deadline -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_job_deadline_cancels_requests_in_flight_and_fails_the_job_with_every_row_recorded(
    owner: Any, target: TargetServer, live_database_url: str, redis_url: str, tmp_path: Path
) -> None:
    """1,000 URLs of 1 s each at concurrency 20 would take 50 s; the deadline ends the job after 3 s."""
    job = enqueue(owner, [target.url(f"/delay/1000?i={i}") for i in range(1000)], concurrency=20, per_host=20,
                  job_deadline=3)  # fmt: skip
    env = services.product_env(database_url=live_database_url, redis_url=redis_url)
    worker = start_worker(env, tmp_path / "worker.log", "--concurrency", "100")
    try:
        wait_until(lambda: Job.objects.get(pk=job.pk).is_terminal, timeout=60, what="the job ends")
        wait_until(lambda: target.stats().in_flight == 0, timeout=2, what="the requests in flight are cancelled")
    finally:
        worker.stop()

    job.refresh_from_db()
    assert job.deadline_at == job.started_at + timedelta(seconds=3)
    assert job.finished_at - job.started_at <= timedelta(seconds=3.5), worker.log_tail()
    assert job.status == Job.Status.FAILED
    assert job.error.startswith("Job deadline passed: 3 s after the job started")
    outcomes = Counter(Result.objects.filter(job=job).values_list("outcome", "error_class"))
    assert outcomes[("pending", "")] == 0  # every row is recorded
    assert 20 <= outcomes[("succeeded", "")] <= 60  # two or three rounds of 20 finished in time
    assert outcomes[("failed", "deadline")] == 1000 - outcomes[("succeeded", "")]
    assert f"{outcomes[('failed', 'deadline')]} unfinished URLs recorded as failed (deadline)" in job.error
    assert_counters_match_rows(job)
    assert target.stats().requests <= 80  # no request started after the deadline


@pytest.mark.django_db(transaction=True)
def test_a_worker_that_takes_over_a_job_whose_deadline_passed_finishes_it_without_a_request(
    owner: Any, target: TargetServer, live_database_url: str, redis_url: str
) -> None:
    """The deadline is stored: a worker restarted after it passed fails the job the same way."""
    job = enqueue(owner, [target.url(f"/ok?i={i}") for i in range(30)], concurrency=5, job_deadline=0.5)
    claim = claims.claim_job("crashed-worker", lease_seconds=0.2)  # it starts the clock, then dies
    assert claim is not None and claim.job.deadline_at == claim.job.started_at + timedelta(seconds=0.5)
    time.sleep(0.6)
    env = services.product_env(database_url=live_database_url, redis_url=redis_url)
    run_batch_worker(env)

    job.refresh_from_db()
    assert (job.status, job.failed, job.succeeded) == (Job.Status.FAILED, 30, 0)
    assert "30 unfinished URLs recorded as failed (deadline)" in job.error
    assert target.stats().requests == 0
    assert set(Result.objects.filter(job=job).values_list("error_class", flat=True)) == {"deadline"}
    assert_counters_match_rows(job)


@pytest.mark.django_db
def test_the_clock_starts_once_at_the_first_start_and_survives_a_requeue(owner: Any) -> None:
    job = enqueue(owner, URLS, concurrency=1, job_deadline=60)
    assert job.deadline_at is None  # queued: the clock has not started
    first = claims.claim_job("w1")
    assert first is not None
    deadline = first.job.deadline_at
    assert deadline == first.job.started_at + timedelta(seconds=60)
    records.leave_job(first, "stop")  # back to the queue
    second = claims.claim_job("w2")
    assert second is not None and second.job.deadline_at == deadline


# --- validation -------------------------------------------------------------------------------------


def test_deadlines_default_to_none_and_take_seconds() -> None:
    assert {k: validate_submission({"urls": URLS}).options[k] for k in ("url_deadline", "job_deadline")} == {
        "url_deadline": None, "job_deadline": None,
    }  # fmt: skip
    options = validate_submission({"urls": URLS, "url_deadline": "2.5", "job_deadline": 600}).options
    assert (options["url_deadline"], options["job_deadline"]) == (2.5, 600.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("url_deadline", 0), ("url_deadline", -1), ("url_deadline", True), ("url_deadline", 1e9),
     ("job_deadline", "soon"), ("job_deadline", float("inf")), ("job_deadline", [3])],
)  # fmt: skip
def test_bad_deadlines_are_refused_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(SubmissionError) as raised:
        validate_submission({"urls": URLS, field: value})
    assert list(raised.value.errors) == [field]
    assert raised.value.errors[field].startswith("must be a number of seconds greater than 0")


@pytest.mark.django_db(transaction=True)
def test_the_api_answers_400_naming_each_bad_deadline(owner: Any) -> None:
    client = Client()
    client.force_login(owner)
    body = {"urls": URLS, "url_deadline": 0, "job_deadline": "soon"}
    response = client.post("/api/jobs/", json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"url_deadline", "job_deadline"}
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_api_stores_and_shows_the_deadlines(owner: Any, settings: Any) -> None:
    settings.CHANNEL_LAYERS = MEMORY_LAYER
    client = Client()
    client.force_login(owner)
    response = client.post(
        "/api/jobs/", json.dumps({"urls": URLS, "url_deadline": 2.5, "job_deadline": 60}),
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    data = response.json()
    assert (data["url_deadline"], data["job_deadline"], data["deadline_at"]) == (2.5, 60.0, None)
    job = Job.objects.get(pk=data["id"])
    assert (job.url_deadline, job.job_deadline) == (2.5, 60.0)
    page = client.get(f"/jobs/{job.pk}/")
    assert b"URL deadline 2.5 s" in page.content and b"Job deadline 60 s" in page.content


def test_the_form_passes_the_deadlines_on() -> None:
    form = JobSubmitForm(data={"urls": "http://a.example/", "url_deadline": "3", "job_deadline": "bad"})
    assert not form.is_valid()
    assert "job_deadline" in form.errors and "url_deadline" not in form.errors
    form = JobSubmitForm(data={"urls": "http://a.example/", "url_deadline": "3", "job_deadline": "90"})
    assert form.is_valid(), form.errors
    assert form.job_request is not None
    assert (form.job_request.options["url_deadline"], form.job_request.options["job_deadline"]) == (3.0, 90.0)
