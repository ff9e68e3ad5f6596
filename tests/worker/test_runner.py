"""The worker on real parts: the loopback target server, the database, Redis, and `runworker` processes.

Concurrency bounds are checked at the target (peak requests in flight), where
they matter; the database is checked for counters equal to rows.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command, get_commands
from django.core.management.base import CommandError
from django.db import transaction

from jobs.engine.values import FetchResult
from jobs.management.commands import runworker
from jobs.models import Chunk, Job, Result, Share
from jobs.progress import groups
from jobs.queue import claims, control, records
from jobs.worker.runner import Worker
from tests import services
from tests.conftest import redis_layer_settings
from tests.target import TargetServer
from tests.worker.conftest import (
    _status_is,
    amake_job,
    assert_counters_match_rows,
    chunk_claims,
    eventually,
    expire_shares,
    final_rows,
    make_job,
    outcomes,
    reload,
    shares_of,
    start_worker,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)

REFUSED = "http://127.0.0.1:9/"  # the discard port: nothing listens, the connection is refused


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer(delay_ms=20) as server:
        yield server



# --- the command ---------------------------------------------------------------------


def test_our_runworker_wins_over_channels() -> None:
    assert get_commands()["runworker"] == "jobs"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "0"], "between 1 and 10000"),
        (["--concurrency", "many"], "not an integer"),
        (["--max-jobs", "8", "--concurrency", "4"], "--max-jobs 8 exceeds --concurrency 4"),
        (["--grace", "-1"], "between 0 and 3600"),
        (["--worker-id", ""], "printable"),
    ],
)
def test_bad_options_are_refused(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("runworker", *args)


def test_the_command_runs_the_worker_with_rarer_gc_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int]] = []

    async def run(worker: Worker) -> None:
        seen.append((gc.get_threshold()[0], gc.get_freeze_count()))

    before = gc.get_threshold()
    monkeypatch.setattr(Worker, "run", run)
    call_command("runworker", "--batch")
    assert seen and seen[0][0] == runworker.GC_THRESHOLD and seen[0][1] > 0  # startup objects frozen
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0  # restored: tests run it in-process


def test_batch_run_records_every_url_within_the_job_concurrency(owner: Any, target: TargetServer) -> None:
    urls = [target.url(f"/ok/{i}") for i in range(100)]
    urls += [target.url("/status/404")] * 10 + [target.url("/status/503")] * 5 + [REFUSED]
    job = make_job(owner, urls, concurrency=4)

    def custom_handler(signum: int, frame: Any) -> None:
        raise AssertionError("not called")

    previous = signal.signal(signal.SIGTERM, custom_handler)
    try:
        call_command("runworker", "--batch", "--concurrency", "50")
        assert signal.getsignal(signal.SIGTERM) is custom_handler  # restored after the run
    finally:
        signal.signal(signal.SIGTERM, previous)

    job.refresh_from_db()
    assert job.status == Job.Status.COMPLETED and job.finished_at is not None and shares_of(job) == []
    assert (job.succeeded, job.failed, job.cancelled) == (100, 16, 0)
    assert outcomes(job) == {"succeeded": 100, "failed": 16}
    assert_counters_match_rows(job)
    stats = target.stats()
    # Every URL once (the refused one never reached the server), plus 2 retries of each 503 (default retries 2).
    assert stats.requests == 115 + 5 * 2
    unavailable = Result.objects.filter(job=job, url__endswith="/status/503").first()
    assert unavailable is not None and (unavailable.attempts, unavailable.error_class) == (3, "http_status")
    assert stats.peak_in_flight == 4  # the job's concurrency: reached, never exceeded
    not_found = Result.objects.filter(job=job, url__endswith="/status/404").first()
    assert not_found is not None
    assert (not_found.outcome, not_found.status_code, not_found.attempts) == ("failed", 404, 1)
    assert not_found.error.startswith("http_status: 404") and not_found.fetched_at is not None
    refused = Result.objects.get(job=job, url=REFUSED)
    assert refused.error.startswith("connect:") and refused.status_code is None


async def test_the_worker_wide_limit_caps_all_jobs_together(owner: Any, target: TargetServer) -> None:
    # 20 consumers share 6 slots. Waiting for a slot must not eat into a request's deadline
    # (0.5 s for a 0.2 s answer), or the waiting ones would time out.
    first = await amake_job(owner, [target.url("/delay/200")] * 24, concurrency=10, timeout=0.5)
    second = await amake_job(owner, [target.url("/delay/200")] * 24, concurrency=10, timeout=0.5)

    await Worker(concurrency=6, max_jobs=2, batch=True, handle_signals=False).run()

    first, second = await reload(first), await reload(second)
    assert first.status == second.status == Job.Status.COMPLETED
    assert first.succeeded == second.succeeded == 24
    assert target.stats().peak_in_flight == 6
    assert second.started_at < first.finished_at  # the two ran side by side


async def test_the_worker_runs_with_redis_down(owner: Any, target: TargetServer, settings: Any) -> None:
    settings.CHANNEL_LAYERS = redis_layer_settings(f"redis://127.0.0.1:{services.free_port()}/0")
    job = await amake_job(owner, [target.url("/ok")] * 30, concurrency=5)

    await Worker(batch=True, handle_signals=False).run()

    job = await reload(job)
    assert (job.status, job.succeeded) == (Job.Status.COMPLETED, 30)


async def test_a_wakeup_starts_a_new_job_at_once(owner: Any, target: TargetServer) -> None:
    worker = Worker(poll_interval=30, handle_signals=False)  # so only the wake-up can explain a quick start
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.5)  # idle: it has polled once and joined the wake-up group
        job = await amake_job(owner, [target.url("/ok")] * 3, concurrency=1)
        sent = time.monotonic()
        await groups.wake_workers()
        await eventually(lambda: target.stats().requests > 0, timeout=5, what="the first request")
        started_after = time.monotonic() - sent
        await eventually(lambda: _status_is(job, Job.Status.COMPLETED), timeout=5, what="the job completes")
    finally:
        worker.stop()
        await running
    assert started_after < 0.5  # seen: ~0.03 s


@pytest.mark.parametrize("announced", [False, True], ids=["polled", "woken"])
async def test_cancel_mid_run_stops_requests_within_a_second(owner: Any, target: TargetServer, announced: bool) -> None:
    job = await amake_job(owner, [target.url("/delay/5000")] * 500, concurrency=8)
    worker = asyncio.create_task(Worker(batch=True, handle_signals=False).run())
    try:
        await eventually(lambda: target.stats().in_flight == 8, timeout=10, what="the job is under way")
        asked = time.monotonic()
        cancelling = await database_sync_to_async(control.request_cancel)(job.pk)
        if announced:
            await groups.publish_job_update(cancelling)
        assert cancelling.status == Job.Status.CANCELLING
        await eventually(lambda: _status_is(job, Job.Status.CANCELLED), timeout=2, what="the job reads cancelled")
        took = time.monotonic() - asked
        # The worker aborted its requests (closed their connections): the server sees them go within a second,
        # not after the 5 s its handlers take; and no request starts any more.
        await eventually(lambda: target.stats().in_flight == 0, timeout=1, what="the requests are aborted")
        requests = target.stats().requests
        await asyncio.sleep(0.3)
        assert target.stats().requests == requests
        await worker
    finally:
        if not worker.done():
            worker.cancel()
    assert took < (0.5 if announced else 1.0)  # seen: ~0.02 s woken, ~0.3 s polled
    job = await reload(job)
    rows = await database_sync_to_async(outcomes)(job)
    assert rows.get("pending", 0) == 0 and rows["cancelled"] > 300
    await database_sync_to_async(assert_counters_match_rows)(job)


async def test_a_crashed_workers_job_resumes_with_only_its_pending_urls(owner: Any, target: TargetServer) -> None:
    job = await amake_job(owner, [target.url(f"/ok/{i}") for i in range(30)], concurrency=5)

    @database_sync_to_async
    def crash_after_ten() -> None:
        claim = claims.claim_job("crashed-worker")
        assert claim is not None
        chunk = claims.claim_chunk(claim)
        assert chunk is not None and (chunk.start, chunk.end) == (0, 30)
        done = [FetchResult(p, f"/ok/{p}", "succeeded", 200, 64, 1, 1, "") for p in range(10)]
        records.record_results(claim, done)
        expire_shares(job)  # the lease ran out

    await crash_after_ten()
    await Worker(batch=True, handle_signals=False).run()

    job = await reload(job)
    assert (job.status, job.succeeded) == (Job.Status.COMPLETED, 30)
    assert await database_sync_to_async(chunk_claims)(job) == [2]  # the crashed claim counts towards poison
    assert await database_sync_to_async(shares_of)(job) == []  # the lapsed share was deleted, the new one left
    assert target.stats().requests == 20
    await database_sync_to_async(assert_counters_match_rows)(job)


async def test_a_job_left_cancelling_by_a_crashed_worker_is_cancelled_without_requests(
    owner: Any, target: TargetServer
) -> None:
    job = await amake_job(owner, [target.url("/ok")] * 5, concurrency=2)

    @database_sync_to_async
    def crash_while_cancelling() -> None:
        claim = claims.claim_job("crashed-worker")
        assert claim is not None and claims.claim_chunk(claim) is not None
        control.request_cancel(job.pk)
        expire_shares(job)

    await crash_while_cancelling()
    await Worker(batch=True, handle_signals=False).run()

    job = await reload(job)
    assert (job.status, job.cancelled) == (Job.Status.CANCELLED, 5)
    assert await database_sync_to_async(shares_of)(job) == []
    assert target.stats().requests == 0


async def test_the_lease_is_renewed_while_the_job_runs(owner: Any, target: TargetServer, settings: Any) -> None:
    # The lease is renewed at the status checks (every 0.5 s) once the heartbeat is due: a 1 s lease
    # leaves room for a slow check; the job lasts well beyond the two leases watched below.
    settings.WORKER_HEARTBEAT_SECONDS = 0.2
    settings.WORKER_LEASE_SECONDS = 1.0
    job = await amake_job(owner, [target.url("/delay/100")] * 80, concurrency=2)  # ~4 s of work

    @database_sync_to_async
    def lease() -> Any:
        return Share.objects.filter(job=job).values_list("lease_expires_at", flat=True).get()

    worker = asyncio.create_task(Worker(batch=True, handle_signals=False).run())
    try:
        await eventually(lambda: target.stats().requests >= 2, timeout=10, what="the job is under way")
        leases = [await lease()]
        for _ in range(7):  # 2.1 s: twice the lease
            await asyncio.sleep(0.3)
            # The job's one chunk is held under a live share: a rival can neither take over nor help.
            assert await database_sync_to_async(claims.claim_job)("rival") is None
            leases.append(await lease())
        await worker
    finally:
        if not worker.done():
            worker.cancel()
    assert leases == sorted(leases) and leases[-1] > leases[0]  # renewed: it moved forward
    job = await reload(job)
    assert job.status == Job.Status.COMPLETED and job.succeeded == 80
    assert await database_sync_to_async(chunk_claims)(job) == [1]


async def test_a_broken_job_fails_with_its_traceback_and_the_worker_goes_on(owner: Any, target: TargetServer) -> None:
    broken = await amake_job(owner, [target.url("/ok")] * 3, concurrency=0)  # fetch_all refuses it
    healthy = await amake_job(owner, [target.url("/ok")] * 3, concurrency=1)

    await Worker(max_jobs=1, batch=True, handle_signals=False).run()

    broken, healthy = await reload(broken), await reload(healthy)
    assert broken.status == Job.Status.FAILED
    assert broken.error.startswith("ValueError: concurrency must be at least 1")
    assert "Traceback" in broken.error and "fetch_all" in broken.error
    assert broken.cancelled == 3 and await database_sync_to_async(shares_of)(broken) == []
    assert (healthy.status, healthy.succeeded) == (Job.Status.COMPLETED, 3)


async def test_a_worker_that_lost_its_claim_stops_and_writes_nothing(owner: Any, target: TargetServer) -> None:
    job = await amake_job(owner, [target.url("/delay/100")] * 300, concurrency=4)
    worker = asyncio.create_task(Worker(batch=True, handle_signals=False).run())

    @database_sync_to_async
    def steal() -> int:
        """Expire the worker's share under the job's lock (no fenced write half done); return the rows written."""
        with transaction.atomic():
            Job.objects.select_for_update().get(pk=job.pk)
            expire_shares(job)
            written = final_rows(job)
        claim = claims.claim_job("thief")  # the job has no live share: the thief takes it over ...
        assert claim is not None
        assert claims.claim_chunk(claim) is not None  # ... and its one chunk, so the loser cannot rejoin to help
        return written

    try:
        await eventually(lambda: target.stats().requests >= 8, timeout=10, what="the job is under way")
        written = await steal()
        await eventually(lambda: worker.done(), timeout=2, what="the worker lets go of the job")
    finally:
        if not worker.done():
            worker.cancel()
    await worker
    assert target.stats().in_flight == 0
    job = await reload(job)
    assert job.status == Job.Status.RUNNING  # not failed, not finished
    assert await database_sync_to_async(shares_of)(job) == ["thief"]
    assert await Chunk.objects.filter(job=job).values_list("worker_id", flat=True).aget() == "thief"
    assert await database_sync_to_async(final_rows)(job) == written  # nothing written once the share was lost
    await database_sync_to_async(assert_counters_match_rows)(job)


# --- the runworker process and signals ----------------------------------------------------------




def test_sigterm_releases_the_job_and_a_restart_finishes_it(
    owner: Any, target: TargetServer, live_database_url: str, redis_url: str, tmp_path: Path
) -> None:
    job = make_job(owner, [target.url("/delay/300")] * 40, concurrency=4)
    env = services.product_env(database_url=live_database_url, redis_url=redis_url)
    worker = start_worker(env, tmp_path / "first.log", "--grace", "0.1")
    try:
        wait_until(lambda: final_rows(job) >= 4, timeout=20, what="the first results")
        worker.popen.send_signal(signal.SIGTERM)
        code = worker.popen.wait(timeout=10)
    finally:
        worker.stop()
    assert code == 0, worker.log_tail()
    assert target.stats().in_flight == 0
    job.refresh_from_db()
    assert (job.status, shares_of(job)) == (Job.Status.QUEUED, [])
    # Handed back cleanly: the chunk is free and the claim does not count towards poison.
    assert list(Chunk.objects.filter(job=job).values_list("share", "claims")) == [(None, 0)]
    assert 4 <= final_rows(job) < 40
    assert_counters_match_rows(job)

    restarted = subprocess.run(
        [sys.executable, "manage.py", "runworker", "--batch"],
        env=env,
        cwd=services.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert restarted.returncode == 0, restarted.stderr
    job.refresh_from_db()
    assert (job.status, job.succeeded) == (Job.Status.COMPLETED, 40)
    assert_counters_match_rows(job)


def test_a_second_signal_cuts_the_grace_short(
    owner: Any, target: TargetServer, live_database_url: str, redis_url: str, tmp_path: Path
) -> None:
    job = make_job(owner, [target.url("/hang")] * 4, concurrency=2, timeout=60)
    env = services.product_env(database_url=live_database_url, redis_url=redis_url)
    worker = start_worker(env, tmp_path / "worker.log", "--grace", "30")
    try:
        wait_until(lambda: target.stats().in_flight == 2, timeout=20, what="two requests in flight")
        worker.popen.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert worker.poll() is None and target.stats().in_flight == 2  # the grace: requests may finish
        worker.popen.send_signal(signal.SIGINT)
        asked = time.monotonic()
        code = worker.popen.wait(timeout=10)
        took = time.monotonic() - asked
    finally:
        worker.stop()
    assert code == 0, worker.log_tail()
    assert took < 2.0
    wait_until(lambda: target.stats().in_flight == 0, timeout=2, what="the server sees the requests end")
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED and final_rows(job) == 0
