"""Nothing lost, nothing doubled: real `runworker` processes stopped, killed, paused, and cut off.

Every test runs the product as separate processes against the test database
and a loopback target server in this process, which counts requests per path,
so "fetched twice" and "started after the stop" are measured where they
happen. The end state is always read from the database: exactly one final row
per URL, counters equal to the rows, no job left `running`.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from channels.db import database_sync_to_async
from django.db import connection

from jobs.models import Job
from tests import services
from tests.test_integration import Client, JobSocket
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


# --- Redis outages ---------------------------------------------------------------------------------


async def connect_with_backoff(client: Client, job_id: str, stack: services.LiveStack) -> AsyncIterator[JobSocket]:
    """Open the job's socket as the live page does after a drop: retry with backoff until daphne accepts it."""
    delay = 0.2
    deadline = time.monotonic() + 30
    while True:
        try:
            async with client.job_socket(job_id) as socket:
                await socket.receive(timeout=10)  # the fresh snapshot
                yield socket
                return
        except (aiohttp.ClientError, AssertionError, TimeoutError):
            stack.assert_alive()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def test_redis_killed_and_restarted_mid_job_the_job_completes_and_a_reconnected_page_sees_the_end(
    target: TargetServer, live_database_url: str, tmp_path: Path, django_user_model: Any
) -> None:
    password = secrets.token_urlsafe(16)
    await database_sync_to_async(django_user_model.objects.create_user)(username="alice", password=password)
    port = services.free_port()
    redis = services.start_redis(port=port, workdir=tmp_path / "redis")
    urls = [target.url(f"/ok/{i}?delay=50") for i in range(1500)]
    try:
        with services.live_stack(
            database_url=live_database_url, redis_url=f"redis://127.0.0.1:{port}/0", workdir=tmp_path / "stack"
        ) as stack:
            async with Client.logged_in(stack, "alice", password) as client:
                status, job = await client.post_json("/api/jobs/", {"urls": urls, "concurrency": 10, "timeout": 10})
                assert status == 201, job
                async with client.job_socket(job["id"]) as socket:
                    await socket.until(lambda message: message["job"]["done"] >= 100, timeout=60)

                redis.kill()
                before = target.stats().requests
                await asyncio.sleep(2)
                fetched_while_down = target.stats().requests - before
                redis = services.start_redis(port=port, workdir=tmp_path / "redis")

                async for socket in connect_with_backoff(client, job["id"], stack):
                    assert socket.messages[0]["type"] == "snapshot"
                    final = (await socket.until_terminal(timeout=90))["job"]
                    kinds = [message["type"] for message in socket.messages]
                _, api_job = await client.get_json(f"/api/jobs/{job['id']}/")
            stack.assert_alive()
            worker_log = stack.worker.log_path.read_text() if stack.worker.log_path else ""
    finally:
        redis.stop()

    assert fetched_while_down > 50, "the worker stopped fetching while Redis was down"
    assert (final["status"], final["succeeded"], final["done"]) == ("completed", 1500, 1500), final
    assert final == api_job  # the page's last numbers are the database's
    assert "progress" in kinds, "publishing did not resume after Redis came back"
    assert worker_log.count("Channel layer unreachable") == 1, worker_log  # once per outage, not per message
    assert "Channel layer reachable again" in worker_log
    assert sum(target.path_counts().values()) == 1500
