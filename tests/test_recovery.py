"""Nothing lost, nothing doubled: real `runworker` processes stopped, killed, paused, and cut off.

Every test runs the product as separate processes against the test database
and a loopback target server in this process, which counts requests per path,
so "fetched twice" and "started after the stop" are measured where they
happen. The end state is always read from the database: exactly one final row
per URL, counters equal to the rows, no job left `running`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.models import Job
from tests import services
from tests.target import TargetServer
from tests.test_worker import assert_counters_match_rows, final_rows, make_job, start_worker, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer(delay_ms=20) as server:
        yield server


@pytest.fixture
def owner(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="owner")


@pytest.fixture
def env(live_database_url: str, redis_url: str) -> dict[str, str]:
    return services.product_env(database_url=live_database_url, redis_url=redis_url)


def run_batch_worker(env: dict[str, str], timeout: float = 120) -> None:
    """`runworker --batch` until the queue is empty; fail with its output if it does not exit 0."""
    done = subprocess.run(
        [sys.executable, "manage.py", "runworker", "--batch"],
        env=env, cwd=services.BASE_DIR, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


# --- graceful shutdown ----------------------------------------------------------------------------


def test_sigterm_lets_requests_in_flight_finish_starts_no_new_one_and_exits_0(
    owner: Any, target: TargetServer, env: dict[str, str], tmp_path: Path
) -> None:
    """The default grace (10 s) outlasts the 1.5 s requests in flight: they finish and are recorded.

    The fetch engine already holds further URLs in its queue at the signal;
    none of them may reach the server afterwards.
    """
    job = make_job(owner, [target.url(f"/delay/1500?i={i}") for i in range(16)], concurrency=4)
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        wait_until(lambda: target.stats().in_flight == 4, timeout=30, what="the first four requests in flight")
        started = target.stats().requests  # the next ones could only start 1.5 s later
        worker.popen.send_signal(signal.SIGTERM)
        asked = time.monotonic()
        code = worker.popen.wait(timeout=20)
        took = time.monotonic() - asked
    finally:
        worker.stop()
    assert code == 0, worker.log_tail()
    assert took < 8, f"exit took {took:.1f} s although the requests in flight ended after 1.5 s"
    wait_until(lambda: target.stats().in_flight == 0, timeout=2, what="the server sees no request left")
    assert target.stats().requests == started == 4  # no request started after the signal
    job.refresh_from_db()
    assert (job.status, job.worker_id, job.claim_token) == (Job.Status.QUEUED, "", None)
    assert (final_rows(job), job.succeeded) == (4, 4)  # what was in flight finished and was recorded
    assert_counters_match_rows(job)

    run_batch_worker(env)
    job.refresh_from_db()
    assert (job.status, job.succeeded) == (Job.Status.COMPLETED, 16)
    assert_counters_match_rows(job)


def test_requests_outliving_the_grace_are_cancelled_and_the_job_goes_back_to_the_queue(
    owner: Any, target: TargetServer, env: dict[str, str], tmp_path: Path
) -> None:
    job = make_job(owner, [target.url("/hang")] * 6, concurrency=3, timeout=120)
    worker = start_worker(env, tmp_path / "worker.log", "--grace", "1")
    try:
        wait_until(lambda: target.stats().in_flight == 3, timeout=30, what="three requests in flight")
        worker.popen.send_signal(signal.SIGTERM)
        asked = time.monotonic()
        code = worker.popen.wait(timeout=15)
        took = time.monotonic() - asked
    finally:
        worker.stop()
    assert code == 0, worker.log_tail()
    assert 1 <= took < 6
    wait_until(lambda: target.stats().in_flight == 0, timeout=2, what="the server sees the requests cancelled")
    assert target.stats().requests == 3
    job.refresh_from_db()
    # Released, not failed: nothing was recorded for the cancelled requests, all six URLs are still to do.
    assert (job.status, job.error, final_rows(job), job.claims) == (Job.Status.QUEUED, "", 0, 0)
