"""Nothing lost, nothing doubled: real `runworker` processes stopped, killed, paused, and cut off.

Every test runs the product as separate processes against the test database
and a loopback target server in this process, which counts requests per path,
so "fetched twice" and "started after the stop" are measured where they
happen. The end state is always read from the database: exactly one final row
per URL, counters equal to the rows, no job left `running`.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from channels.db import database_sync_to_async
from django.db import connection

from jobs.models import Chunk, Job, Result, Share
from tests import services
from tests.liveclient import TERMINAL, Client
from tests.target import TargetServer
from tests.worker.conftest import assert_counters_match_rows, final_rows, make_job, start_worker, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer(delay_ms=20) as server:
        yield server


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
    waiting = make_job(owner, [target.url("/ok/waiting")], concurrency=1)  # its slot frees up during the grace
    worker = start_worker(env, tmp_path / "worker.log", "--max-jobs", "1")
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
    assert job.status == Job.Status.QUEUED and not Share.objects.filter(job=job).exists()
    assert (final_rows(job), job.succeeded) == (4, 4)  # what was in flight finished and was recorded
    assert_counters_match_rows(job)
    waiting.refresh_from_db()
    assert waiting.status == Job.Status.QUEUED  # a stopping worker claims nothing more
    assert not Share.objects.filter(job=waiting).exists() and not waiting.chunks.filter(claims__gt=0).exists()

    run_batch_worker(env)
    job.refresh_from_db()
    assert (job.status, job.succeeded) == (Job.Status.COMPLETED, 16)
    assert_counters_match_rows(job)
    assert Job.objects.get(pk=waiting.pk).status == Job.Status.COMPLETED


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
    assert (job.status, job.error, final_rows(job)) == (Job.Status.QUEUED, "", 0)
    assert list(job.chunks.values_list("claims", flat=True)) == [0]  # a clean hand-back: no step towards poison


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


async def follow_until_terminal(client: Client, job_id: str, stack: services.LiveStack) -> list[dict[str, Any]]:
    """Follow the job as the live page does: on a dropped socket, reconnect with backoff and start from a snapshot.

    Returns the messages of every connection, in order, up to the one with the job's terminal state.
    """
    messages: list[dict[str, Any]] = []
    delay = 0.2
    deadline = time.monotonic() + 90
    while True:
        try:
            async with client.job_socket(job_id) as socket:
                try:
                    snapshot = await socket.receive(timeout=10)
                    assert snapshot["type"] == "snapshot", snapshot
                    delay = 0.2
                    if snapshot["job"]["status"] not in TERMINAL:
                        await socket.until_terminal(timeout=max(deadline - time.monotonic(), 1))
                finally:
                    messages += socket.messages
            return messages
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
    # 3000 URLs of 50 ms, 10 at a time: 15 s, so the job outlasts the outage and the page's reconnection by far.
    total = 3000
    urls = [target.url(f"/ok/{i}?delay=50") for i in range(total)]
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
                    dropped = await socket.ws.receive(timeout=20)  # the page notices: daphne closes its socket
                    assert dropped.type in {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED}, dropped
                    await asyncio.sleep(2)
                    fetched_while_down = target.stats().requests - before
                redis = services.start_redis(port=port, workdir=tmp_path / "redis")

                messages = await follow_until_terminal(client, job["id"], stack)
                final = messages[-1]["job"]
                kinds = [message["type"] for message in messages]
                _, api_job = await client.get_json(f"/api/jobs/{job['id']}/")
            stack.assert_alive()
            worker_log = stack.worker.log_path.read_text() if stack.worker.log_path else ""
    finally:
        redis.stop()

    assert fetched_while_down > 50, "the worker stopped fetching while Redis was down"
    assert (final["status"], final["succeeded"], final["done"]) == ("completed", total, total), final
    assert final == api_job  # the page's last numbers are the database's
    assert "progress" in kinds, "publishing did not resume after Redis came back"
    assert worker_log.count("Channel layer unreachable") == 1, worker_log  # once per outage, not per message
    assert "Channel layer reachable again" in worker_log
    assert sum(target.path_counts().values()) == total


# --- crashes and pauses ------------------------------------------------------------------------------

FAST_LEASE = {"WORKER_LEASE_SECONDS": "2", "WORKER_HEARTBEAT_SECONDS": "0.5"}


@pytest.mark.postgres
def test_chaos_sigkill_at_random_moments_every_url_ends_with_exactly_one_result(
    owner: Any, target: TargetServer, env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL the worker at random moments, at least 10 times, restarting it each time, until the job is done.

    Only recorded results count: a URL in flight or buffered at the kill is fetched again by the next worker
    (at-least-once fetching, printed below), but is recorded once.
    """
    urls = [target.url(f"/ok/{i}?delay=100") for i in range(2000)]
    job = make_job(owner, urls, concurrency=10, timeout=10)
    chaos_env = {**env, **FAST_LEASE, "WORKER_MAX_CLAIMS": "100"}
    rng = random.Random()
    kills = mid_fetch = 0
    progress: list[int] = []
    while kills < 12:
        worker = start_worker(chaos_env, tmp_path / f"worker-{kills}.log")
        try:
            if kills % 4 == 3:
                time.sleep(rng.uniform(0.2, 2.0))  # a random moment of its start-up, maybe before it claimed
            else:
                seen = target.stats().requests
                wait_until(lambda: target.stats().requests > seen + 10, timeout=60, what="the new worker fetching")
                time.sleep(rng.uniform(0, 1.0))  # a random moment mid-fetch
                mid_fetch += target.stats().in_flight > 0
        finally:
            worker.kill()
        job.refresh_from_db()
        assert job.status not in Job.TERMINAL, f"the job ended after only {kills} kills ({job.status}: {job.error})"
        kills += 1
        progress.append(final_rows(job))
    worker = start_worker(chaos_env, tmp_path / "last-worker.log")
    try:
        wait_until(lambda: Job.objects.get(pk=job.pk).status in Job.TERMINAL, timeout=120, what="the job ends")
    finally:
        worker.stop()

    job.refresh_from_db()
    counts = target.path_counts()
    twice = sum(1 for i in range(2000) if counts[f"/ok/{i}"] > 1)
    print(f"chaos: {kills} SIGKILLs ({mid_fetch} with requests in flight), rows recorded after each: {progress};"
          f" {twice} of 2000 URLs fetched more than once, {sum(counts.values())} requests in all")  # fmt: skip
    assert (job.status, job.error) == (Job.Status.COMPLETED, "")
    assert (Result.objects.filter(job=job).count(), job.succeeded) == (2000, 2000)
    assert_counters_match_rows(job)
    assert all(counts[f"/ok/{i}"] >= 1 for i in range(2000))
    assert mid_fetch >= 8, f"only {mid_fetch} kills landed with requests in flight"


def test_a_worker_paused_past_its_lease_gets_no_stale_write_accepted(
    owner: Any, target: TargetServer, env: dict[str, str], tmp_path: Path
) -> None:
    """SIGSTOP worker A mid-request, let B take the job over, SIGCONT A while B still fetches the same URLs.

    A's answers arrive while it is stopped, so the moment it resumes it holds finished results for rows still
    pending, which it would write without the fence. They are recognisable: their elapsed time spans the pause,
    longer than any request of B.
    """
    slow_ms = 6000
    urls = [target.url(f"/ok/slow-{i}?delay={slow_ms}") for i in range(5)]
    urls += [target.url(f"/ok/fast-{i}?delay=20") for i in range(100)]
    job = make_job(owner, urls, concurrency=5, timeout=60)
    paused_env = {**env, **FAST_LEASE}
    a = start_worker(paused_env, tmp_path / "a.log", "--worker-id", "A")
    b: services.ManagedProcess | None = None
    try:
        wait_until(lambda: target.stats().in_flight == 5, timeout=30, what="A's five slow requests in flight")
        a_sent = time.monotonic()
        a.signal_group(signal.SIGSTOP)
        b = start_worker(paused_env, tmp_path / "b.log", "--worker-id", "B")
        wait_until(lambda: target.stats().requests == 10, timeout=30, what="B re-sending the five slow requests")
        assert list(job.chunks.values_list("worker_id", flat=True)) == ["B"]
        time.sleep(max(0.1, a_sent + slow_ms / 1000 + 1.0 - time.monotonic()))  # A's answers have arrived
        a_elapsed_at_least = (time.monotonic() - a_sent) * 1000
        assert final_rows(job) == 0, "B finished the slow URLs already: A would have nothing stale to write"
        a.signal_group(signal.SIGCONT)
        wait_until(lambda: Job.objects.get(pk=job.pk).status in Job.TERMINAL, timeout=60, what="B completes the job")
        time.sleep(1)  # A, running again for several seconds now, has had every chance to write
    finally:
        a.signal_group(signal.SIGCONT)
        a.stop()
        if b is not None:
            b.stop()

    job.refresh_from_db()
    assert (job.status, job.succeeded) == (Job.Status.COMPLETED, 105)
    assert_counters_match_rows(job)
    counts = target.path_counts()
    assert all(counts[f"/ok/slow-{i}"] == 2 for i in range(5))  # A's and B's requests both got answers
    slow_rows = Result.objects.filter(job=job, position__lt=5)
    # Every slow row holds B's answer: none took as long as A's paused requests.
    assert max(row.elapsed_ms for row in slow_rows) < a_elapsed_at_least, [row.elapsed_ms for row in slow_rows]
    assert "stopped working on it" in a.log_tail(200)  # A noticed it lost the job and stopped working on it


@pytest.mark.postgres
def test_four_workers_on_postgresql_share_20_jobs_and_fetch_every_url_exactly_once(
    owner: Any, target: TargetServer, env: dict[str, str], tmp_path: Path
) -> None:
    workers = [start_worker(env, tmp_path / f"w{n}.log", "--worker-id", f"w{n}", "--max-jobs", "2") for n in range(4)]
    try:
        for worker in workers:
            wait_until(lambda w=worker: "started" in w.log_path.read_text(), timeout=60, what="the workers are up")  # type: ignore[misc]
        jobs = [
            make_job(owner, [target.url(f"/ok/{j}-{i}?delay=100") for i in range(100)], concurrency=5)
            for j in range(20)
        ]
        wait_until(
            lambda: Job.objects.filter(status=Job.Status.COMPLETED).count() == 20, timeout=120, what="all jobs done"
        )
        for worker in workers:
            assert worker.poll() is None, worker.log_tail()
    finally:
        for worker in workers:
            worker.stop()

    counts = target.path_counts()
    assert sum(counts.values()) == 2000
    doubled = [path for path, n in counts.items() if n != 1]
    assert doubled == [], f"fetched more than once: {doubled[:10]}"
    ran_on = set(Chunk.objects.filter(job__in=jobs).values_list("worker_id", flat=True))
    assert ran_on == {"w0", "w1", "w2", "w3"}, f"jobs did not spread over the workers: {ran_on}"
    for job in jobs:
        assert_counters_match_rows(job)


def test_four_workers_share_one_large_job_and_its_concurrency_holds_overall(
    owner: Any, target: TargetServer, env: dict[str, str], tmp_path: Path, settings: Any
) -> None:
    """One job, four workers: each claims chunks of it, and together they never exceed its concurrency."""
    settings.WORKER_CHUNK_SIZE = 100
    concurrency = 12
    workers = [start_worker(env, tmp_path / f"w{n}.log", "--worker-id", f"w{n}") for n in range(4)]
    try:
        for worker in workers:
            wait_until(lambda w=worker: "started" in w.log_path.read_text(), timeout=60, what="the workers are up")  # type: ignore[misc]
        # per_host = concurrency: one host, and per_host holds across the workers too (test_politeness.py).
        urls = [target.url(f"/ok/{i}?delay=50") for i in range(2400)]
        job = make_job(owner, urls, concurrency=concurrency, per_host=concurrency)
        wait_until(lambda: Job.objects.get(pk=job.pk).status in Job.TERMINAL, timeout=120, what="the job ends")
        for worker in workers:
            assert worker.poll() is None, worker.log_tail()
    finally:
        for worker in workers:
            worker.stop()

    job.refresh_from_db()
    assert (job.status, job.succeeded) == (Job.Status.COMPLETED, 2400)
    assert_counters_match_rows(job)
    counts = target.path_counts()
    doubled = [path for path, n in counts.items() if n != 1]
    assert (sum(counts.values()), doubled) == (2400, []), f"fetched more than once: {doubled[:10]}"
    stats = target.stats()
    print(f"shared job: peak in flight {stats.peak_in_flight} of {concurrency};"
          f" chunks per worker {dict(Counter(job.chunks.values_list('worker_id', flat=True)))}")  # fmt: skip
    assert stats.peak_in_flight <= concurrency  # the job's limit held over all four workers
    assert stats.peak_in_flight >= concurrency - 2  # and was used, or the limit proves nothing
    per_worker = Counter(job.chunks.values_list("worker_id", flat=True))
    assert len(per_worker) == 4 and min(per_worker.values()) >= 2, per_worker  # every worker took a real part
    assert not Share.objects.filter(job=job).exists()
