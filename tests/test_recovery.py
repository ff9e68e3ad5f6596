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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection

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


# --- database outages ----------------------------------------------------------------------------


@contextmanager
def postgres_outage() -> Iterator[None]:
    """The test database refuses connections and drops the open ones, as during a restart, until the block ends.

    Switched off and on from the cluster's `postgres` database (a database cannot refuse
    connections to itself); this test's own connection to the test database is spared.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (own_pid,) = cursor.fetchone()
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    name = connection.ops.quote_name(params.pop("dbname"))
    with psycopg.connect(**params, dbname="postgres", autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
        try:
            admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> %s",
                [connection.settings_dict["NAME"], own_pid],
            )
            yield
        finally:
            admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")


@pytest.mark.postgres
def test_a_database_outage_mid_job_loses_and_doubles_nothing(
    owner: Any, target: TargetServer, env: dict[str, str], tmp_path: Path
) -> None:
    """Connections dropped and refused for 3 s: the worker keeps fetching, keeps its results, flushes them after."""
    urls = [target.url(f"/ok/{i}?delay=60") for i in range(800)]
    job = make_job(owner, urls, concurrency=10)
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        wait_until(lambda: final_rows(job) >= 50, timeout=60, what="the first results")
        with postgres_outage():
            during = target.stats().requests
            time.sleep(3)
            fetched_while_down = target.stats().requests - during
        wait_until(lambda: Job.objects.get(pk=job.pk).status == Job.Status.COMPLETED, timeout=90, what="completed")
        assert worker.poll() is None, worker.log_tail()  # no crash, no restart needed
    finally:
        worker.stop()
    log = worker.log_path.read_text() if worker.log_path else ""
    assert fetched_while_down > 50, "the worker stopped fetching while the database was down"
    assert log.count("Database unreachable") == 1 and "Database reachable again" in log, log
    assert_counters_match_rows(job)
    assert job.succeeded == 800
    counts = target.path_counts()
    assert all(counts[f"/ok/{i}"] == 1 for i in range(800)), "a result was lost and its URL fetched again"
