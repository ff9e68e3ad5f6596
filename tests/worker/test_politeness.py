"""Politeness held by the fleet: real `runworker` processes, a real Redis, a loopback target that counts.

Every test runs four (or two) workers against one host of the target server
in this process, which counts peak in-flight requests and records when each
request arrived, so the caps are measured where they matter: at the host.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from jobs.engine.fleetscripts import host_keys
from jobs.models import Job
from jobs.queue import control
from tests import services
from tests.target import TargetServer
from tests.worker.conftest import assert_counters_match_rows, start_worker, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.timeout(240)]

FAST_LEASE = {"WORKER_LEASE_SECONDS": "2", "WORKER_HEARTBEAT_SECONDS": "0.5"}


def make_job(owner: Any, urls: list[str], *, concurrency: int = 40, **options: Any) -> Job:
    return control.enqueue_job(owner=owner, urls=urls, name="polite", concurrency=concurrency, timeout=10,
                              options={"retries": 0, **options})  # fmt: skip


def start_workers(
    env: dict[str, str], tmp_path: Path, n: int, *args: str, concurrency: int = 40
) -> list[services.ManagedProcess]:
    workers = [
        start_worker(env, tmp_path / f"w{i}.log", "--worker-id", f"w{i}", "--concurrency", str(concurrency), *args)
        for i in range(n)
    ]
    for worker in workers:
        wait_until(lambda w=worker: "started" in w.log_path.read_text(), timeout=60, what="the workers are up")  # type: ignore[misc]
    return workers


def stop_all(workers: list[services.ManagedProcess]) -> None:
    for worker in workers:
        worker.stop()


def wait_for_jobs(*jobs: Job, timeout: float = 120) -> None:
    wait_until(lambda: all(Job.objects.get(pk=j.pk).status in Job.TERMINAL for j in jobs), timeout=timeout,
               what="the jobs end")  # fmt: skip


def assert_one_result_per_url(job: Job, outcome: str = "completed") -> None:
    job.refresh_from_db()
    assert (job.status, job.succeeded) == (outcome, job.total), (job.status, job.succeeded, job.failed)
    assert_counters_match_rows(job)


def host_of(target: TargetServer) -> str:
    return target.base_url.removeprefix("http://")


@pytest.fixture
def target() -> Any:
    with TargetServer(delay_ms=0) as server:
        yield server


@pytest.fixture
def env(live_database_url: str, redis_url: str) -> dict[str, str]:
    return services.product_env(database_url=live_database_url, redis_url=redis_url)  # fleet-wide slots: the default


def test_per_host_holds_across_four_workers_and_two_jobs(
    owner: Any, target: TargetServer, env: dict[str, str], tmp_path: Path, settings: Any
) -> None:
    # Both jobs spread over the four workers: a worker claims URLs ahead of its slots (its queue), so
    # with 40 slots two workers could hold every chunk of 160 URLs; with 10 each holds a few chunks of 10.
    settings.WORKER_CHUNK_SIZE = 10
    workers = start_workers(env, tmp_path, 4, concurrency=10)
    try:
        jobs = [make_job(owner, [target.url(f"/ok/{j}/{i}?delay=50") for i in range(160)], per_host=4) for j in "ab"]
        wait_for_jobs(*jobs)
    finally:
        stop_all(workers)
    for job in jobs:
        assert_one_result_per_url(job)
        ran_on = set(job.chunks.values_list("worker_id", flat=True))
        assert len(ran_on) >= 2, ran_on  # the job really was shared
    stats = target.stats()
    assert sum(target.path_counts().values()) == 320
    assert 3 <= stats.peak_in_flight <= 4, stats


def test_per_host_rate_holds_across_four_workers(
    owner: Any, target: TargetServer, env: dict[str, str], tmp_path: Path, settings: Any
) -> None:
    settings.WORKER_CHUNK_SIZE = 5
    # One job per worker at most, so the two jobs (40 URLs in all) surely run on different workers.
    workers = start_workers(env, tmp_path, 4, "--max-jobs", "1")
    try:
        jobs = [make_job(owner, [target.url(f"/ok/{j}/{i}") for i in range(20)], per_host_rate=8.0) for j in "ab"]
        wait_for_jobs(*jobs)
    finally:
        stop_all(workers)
    for job in jobs:
        assert_one_result_per_url(job)
    assert len({w for job in jobs for w in job.chunks.values_list("worker_id", flat=True)}) >= 2
    arrivals = sorted(t for _, t in target.arrivals())
    assert len(arrivals) == 40
    burst = 1
    span = arrivals[-1] - arrivals[0]
    assert span >= (40 - burst) / 8 - 0.05, span  # a few ms of jitter between send and arrival
    took = (max(j.finished_at for j in jobs) - min(j.started_at for j in jobs)).total_seconds()
    assert (40 - burst) / 8 - 0.05 <= took < (40 - burst) / 8 + 3, took
    busiest = max(sum(1 for t in arrivals if s <= t < s + 1.0) for s in arrivals)
    assert busiest <= 8 + burst, busiest


def test_a_sigkilled_workers_slots_come_back_within_the_lease(
    owner: Any, target: TargetServer, env: dict[str, str], tmp_path: Path, settings: Any, redis_url: str
) -> None:
    settings.WORKER_CHUNK_SIZE = 20
    env = {**env, **FAST_LEASE}
    workers = start_workers(env, tmp_path, 4)
    client = redis.Redis.from_url(redis_url)
    try:
        job = make_job(owner, [target.url(f"/ok/{i}?delay=200") for i in range(240)], per_host=4)
        target.wait_for(lambda s: s.in_flight == 4, timeout=30)
        holders = [m.decode() for m in client.zrange(host_keys(host_of(target))["hold"], 0, -1)]
        victim = next(w for i, w in enumerate(workers) if any(h.startswith(f"w{i}:") for h in holders))
        victim.popen.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        target.wait_for(lambda s: s.in_flight < 4, timeout=5)  # its requests died with it
        target.wait_for(lambda s: s.in_flight == 4, timeout=float(FAST_LEASE["WORKER_LEASE_SECONDS"]) + 2)
        back_after = time.monotonic() - killed_at
        wait_for_jobs(job)
    finally:
        client.close()
        stop_all(workers)
    assert back_after <= float(FAST_LEASE["WORKER_LEASE_SECONDS"]) + 1.5, back_after
    assert target.stats().peak_in_flight <= 4
    assert_one_result_per_url(job)


def test_a_429_storm_pauses_every_worker_until_retry_after(
    owner: Any, target: TargetServer, env: dict[str, str], tmp_path: Path, settings: Any
) -> None:
    settings.WORKER_CHUNK_SIZE = 20
    workers = start_workers(env, tmp_path, 4)
    try:
        urls = [target.url(f"/storm/{i}?every=25&storms=3&after=1&delay=20") for i in range(120)]
        job = make_job(owner, urls, per_host=4, retries=5, autothrottle=True)
        wait_for_jobs(job)
    finally:
        stop_all(workers)
    assert_one_result_per_url(job)
    storm = target.storm()
    assert storm["storms"] == 3, storm
    # Requests that arrived while the host was closed, later than those already on the wire could.
    assert storm["early"] == [], storm


def test_redis_stopped_mid_job_per_worker_caps_hold_and_shared_ones_resume(
    owner: Any, target: TargetServer, live_database_url: str, tmp_path: Path, settings: Any
) -> None:
    settings.WORKER_CHUNK_SIZE = 50
    port = services.free_port()
    redis_process = services.start_redis(port=port, workdir=tmp_path / "redis")
    env = services.product_env(database_url=live_database_url, redis_url=f"redis://127.0.0.1:{port}/0")
    workers = start_workers(env, tmp_path, 2)
    try:
        job = make_job(owner, [target.url(f"/ok/{i}?delay=30") for i in range(900)], per_host=3)
        wait_until(lambda: Job.objects.get(pk=job.pk).done >= 100, timeout=60, what="the first results")
        assert target.stats().peak_in_flight <= 3
        redis_process.kill()
        wait_until(lambda: all("Redis unreachable" in w.log_path.read_text() for w in workers), timeout=20,
                   what="both workers noticed the outage")  # fmt: skip
        target.reset_stats()
        time.sleep(2)
        during = target.stats()
        redis_process = services.start_redis(port=port, workdir=tmp_path / "redis")
        wait_until(lambda: all("Redis reachable again" in w.log_path.read_text() for w in workers), timeout=20,
                   what="both workers are back on Redis")  # fmt: skip
        time.sleep(0.5)  # requests admitted during the outage end
        target.reset_stats()
        time.sleep(1.5)
        after = target.stats()
        wait_for_jobs(job)
        logs = [w.log_path.read_text() for w in workers]
    finally:
        stop_all(workers)
        redis_process.stop()
    assert during.requests > 20, during  # fetching went on
    assert during.peak_in_flight <= 2 * 3, during  # never more than per_host per worker
    assert after.peak_in_flight <= 3, after  # shared again
    assert_one_result_per_url(job)
    for log in logs:
        assert log.count("Redis unreachable") == 1, log[-3000:]
