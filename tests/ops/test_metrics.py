"""Prometheus metrics: the worker's own endpoint (--metrics-port) and the web's /metrics (METRICS_TOKEN)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import AsyncClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jobs.models import Job
from jobs.monitoring_models import Delivery
from jobs.ops import metrics
from jobs.queue import control
from jobs.queue.resultwrite import FinalRow
from tests import services
from tests.target import TargetServer

TOKEN = "metrics-token-for-tests-0123456789"


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called `name` in an exposition, by their sorted labels."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def get(url: str, *, token: str | None = None, timeout: float = 5.0) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for(predicate: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


@pytest.mark.integration
def test_a_job_of_100_urls_is_counted_by_the_workers_endpoint_which_answers_while_it_runs(
    live_database_url: str, redis_url: str, tmp_path: Path, owner: Any, target: TargetServer
) -> None:
    metrics_port = services.free_port()
    dead_port = services.free_port()  # nothing listens there: connect errors
    urls = (
        [target.url(f"/ok/{i}?delay=250") for i in range(80)]
        + [target.url(f"/status/404?n={i}") for i in range(10)]
        + [f"http://127.0.0.1:{dead_port}/{i}" for i in range(10)]
    )
    worker_args = ("--concurrency", "20", "--metrics-port", str(metrics_port), "--metrics-addr", "127.0.0.1")
    with services.live_stack(
        database_url=live_database_url, redis_url=redis_url, workdir=tmp_path / "stack", worker_args=worker_args,
        extra_env={"METRICS_TOKEN": TOKEN},
    ) as stack:  # fmt: skip
        worker_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        services.wait_for_port("127.0.0.1", metrics_port, timeout=30, process=stack.worker)
        job = control.enqueue_job(owner=owner, urls=urls, name="metrics", concurrency=10, timeout=5,
                                 options={"retries": 0})  # fmt: skip

        def status() -> str:
            return Job.objects.values_list("status", flat=True).get(pk=job.pk)

        wait_for(lambda: status() == Job.Status.RUNNING, timeout=15, what="the job to start")
        scrapes: list[tuple[float, str]] = []

        def scrape_in_flight() -> bool:
            # The job is `running` from its claim; its first requests start a moment later.
            started = time.monotonic()
            code, text = get(worker_metrics)
            assert code == 200
            scrapes.append((time.monotonic() - started, text))
            return samples(text, "batchfetch_requests_in_flight")[()] > 0

        wait_for(scrape_in_flight, timeout=10, what="requests in flight on the worker's endpoint")
        assert max(seconds for seconds, _ in scrapes) < 1.0  # it answers while the loop fetches
        during = scrapes[-1][1]
        assert samples(during, "batchfetch_worker_jobs_running") == {(): 1.0}
        assert status() == Job.Status.RUNNING  # scraped while it ran

        wait_for(lambda: status() == Job.Status.COMPLETED, timeout=60, what="the job to complete")
        # The worker counts a batch once its transaction has returned: a moment after the commit others see.
        wait_for(lambda: sum(samples(get(worker_metrics)[1], "batchfetch_urls_fetched_total").values()) >= 100,
                 timeout=5, what="the last batch to be counted")  # fmt: skip
        code, after = get(worker_metrics)
        assert code == 200
        fetched = samples(after, "batchfetch_urls_fetched_total")
        assert sum(fetched.values()) == 100
        assert fetched == {
            (("error_class", ""), ("outcome", "succeeded")): 80.0,
            (("error_class", "http_status"), ("outcome", "failed")): 10.0,
            (("error_class", "connect"), ("outcome", "failed")): 10.0,
        }
        assert samples(after, "batchfetch_fetch_duration_seconds_count") == {(): 100.0}
        slow = samples(after, "batchfetch_fetch_duration_seconds_bucket")
        assert slow[(("le", "0.1"),)] <= 20 < slow[(("le", "0.5"),)]  # the 80 slow ones took 250 ms each
        assert samples(after, "batchfetch_db_write_seconds_count")[()] >= 1
        assert samples(after, "batchfetch_progress_messages_sent_total")[(("kind", "progress"),)] >= 1
        assert samples(after, "process_cpu_seconds_total")  # prometheus_client's process metrics come along

        assert get(stack.url("/metrics"))[0] == 401
        assert get(stack.url("/metrics"), token="wrong")[0] == 401
        code, web = get(stack.url("/metrics"), token=TOKEN)
        assert code == 200
        jobs = samples(web, "batchfetch_jobs")
        assert jobs[(("status", "completed"),)] == 1.0 and sum(jobs.values()) == 1.0
        assert samples(web, "batchfetch_queue_pending_urls") == {(): 0.0}


@pytest.mark.django_db(transaction=True)
async def test_web_metrics_need_the_token_and_show_the_queue(settings: Any, owner: Any) -> None:
    client = AsyncClient()
    settings.METRICS_TOKEN = ""
    assert (await client.get("/metrics")).status_code == 404  # off until a token is set
    settings.METRICS_TOKEN = TOKEN
    response = await client.get("/metrics")
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    assert (await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}x"})).status_code == 401
    assert (await client.post("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 405

    from asgiref.sync import sync_to_async

    job = await sync_to_async(control.enqueue_job)(owner=owner, urls=["http://a.example/", "http://b.example/"],
                                                  name="q", concurrency=1, timeout=1)  # fmt: skip
    await Delivery.objects.acreate(job=job, channel="webhook", target="http://hook.example/", body="{}",
                                   status="failed")  # fmt: skip
    # A host the ALLOWED_HOSTS list does not name, as a scraper addressing the container sends it.
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, HTTP_HOST="web:8000")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert samples(text, "batchfetch_jobs")[(("status", "queued"),)] == 1.0
    assert samples(text, "batchfetch_queue_pending_urls") == {(): 2.0}
    assert samples(text, "batchfetch_queue_oldest_queued_seconds")[()] >= 0
    notifications = samples(text, "batchfetch_notifications")
    assert notifications[(("channel", "webhook"), ("status", "failed"))] == 1.0 and sum(notifications.values()) == 1.0
    assert "batchfetch_urls_fetched" not in text  # the workers' counters are on their own endpoints


def _row(position: int, outcome: str, error_class: str, elapsed_ms: int, attempts: int) -> FinalRow:
    from django.utils import timezone

    return FinalRow(position, position, "http://x/", outcome, None, None, elapsed_ms, attempts, "", error_class,
                    "", "", "", 0, "", None, timezone.now())  # fmt: skip


def test_observe_recorded_counts_outcomes_latency_and_retries() -> None:
    def value(name: str, **labels: str) -> float:
        from prometheus_client import REGISTRY

        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (
        value("batchfetch_urls_fetched_total", outcome="failed", error_class="timeout"),
        value("batchfetch_fetch_duration_seconds_count"),
        value("batchfetch_fetch_retries_total"),
        value("batchfetch_fetch_duration_seconds_bucket", le="0.05"),
    )
    metrics.observe_recorded([_row(0, "failed", "timeout", 3000, 3), _row(1, "failed", "timeout", 3000, 1),
                              _row(2, "succeeded", "", 20, 2)])  # fmt: skip
    after = (
        value("batchfetch_urls_fetched_total", outcome="failed", error_class="timeout"),
        value("batchfetch_fetch_duration_seconds_count"),
        value("batchfetch_fetch_retries_total"),
        value("batchfetch_fetch_duration_seconds_bucket", le="0.05"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [2, 3, 3, 1]


class FakeWorker:
    def __init__(self, in_flight: int, hosts: dict[str, int], jobs: int) -> None:
        self._in_flight, self._hosts, self._jobs = in_flight, hosts, jobs

    def requests_in_flight(self) -> int:
        return self._in_flight

    def host_requests_in_flight(self) -> dict[str, int]:
        return self._hosts

    def jobs_running(self) -> int:
        return self._jobs


def test_worker_gauges_add_up_the_workers_of_the_process_and_bound_the_hosts() -> None:
    gauges = metrics.WorkerGauges()
    registry = CollectorRegistry()
    registry.register(gauges)
    many = {f"h{i}.example": i for i in range(1, 81)}
    first, second = FakeWorker(3, {"a.example": 2, "b.example": 1}, 1), FakeWorker(5, many, 2)
    gauges.add(first)
    gauges.add(second)
    text = generate_latest(registry).decode()
    assert samples(text, "batchfetch_requests_in_flight") == {(): 8.0}
    assert samples(text, "batchfetch_worker_jobs_running") == {(): 3.0}
    hosts = samples(text, "batchfetch_host_requests_in_flight")
    assert len(hosts) == metrics.MAX_HOST_SERIES and hosts[(("host", "h80.example"),)] == 80.0
    gauges.remove(second)
    text = generate_latest(registry).decode()
    assert samples(text, "batchfetch_host_requests_in_flight") == {
        (("host", "a.example"),): 2.0, (("host", "b.example"),): 1.0
    }
