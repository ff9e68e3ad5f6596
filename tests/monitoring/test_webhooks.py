"""Notifications: signed webhooks to a loopback receiver, retries, the SSRF guard, email (locmem), settle-once."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core import mail
from django.db import connections
from django.test import Client
from prometheus_client import REGISTRY

from jobs.models import Job
from jobs.monitoring import settle, webhooks
from jobs.monitoring.ticker import Ticker
from jobs.monitoring_models import Delivery, JobMonitor
from tests.conftest import MEMORY_LAYER
from tests.monitoring.helpers import finished_job, webhook_receiver

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = [("http://a.example/", "succeeded", 200, "1" * 64), ("http://b.example/", "failed", 500, "")]


@pytest.fixture(autouse=True)
def fast(settings: Any) -> None:
    settings.CHANNEL_LAYERS = MEMORY_LAYER
    settings.MONITOR_WEBHOOK_BACKOFF = 0.05
    settings.MONITOR_WEBHOOK_TIMEOUT = 2.0


@pytest.fixture(autouse=True)
async def close_thread_connections() -> Any:
    yield
    # The async ORM runs on asgiref's sync thread and leaves its connection open: close it, or PostgreSQL
    # refuses to drop the test database at the session's end (as in test_pause.py).
    await sync_to_async(connections.close_all)()


def monitored(owner: Any, **notify: Any) -> Job:
    job = finished_job(owner, ROWS)
    JobMonitor.objects.create(job=job, **notify)
    return job


async def pass_until(predicate: Any, *, timeout: float = 10.0) -> Ticker:
    """Run the worker's monitoring passes until `predicate()` (sync, on the database) holds."""
    ticker = Ticker()
    deadline = time.monotonic() + timeout
    try:
        while not await sync_to_async(predicate)():
            assert time.monotonic() < deadline, "timed out"
            await ticker.run_once()
            await asyncio.sleep(0.05)
    finally:
        await ticker.aclose()
    return ticker


def test_signature_is_hmac_sha256_of_the_body() -> None:
    header = webhooks.signature("whsec_x", b'{"a":1}')
    assert header == "sha256=" + __import__("hmac").new(b"whsec_x", b'{"a":1}', "sha256").hexdigest()
    assert len(header) == len("sha256=") + 64
    assert webhooks.verify("whsec_x", b'{"a":1}', header) and not webhooks.verify("whsec_y", b'{"a":1}', header)


async def test_one_signed_post_per_finished_job(ann: Any) -> None:
    secret = await sync_to_async(webhooks.rotate_secret)(ann)
    with webhook_receiver() as receiver:
        job = await sync_to_async(monitored)(ann, notify_url=receiver.url(), notify_on=["finished"])
        await pass_until(lambda: Delivery.objects.filter(status="delivered").exists())
        await Ticker().run_once()  # settled once: no second delivery
        (request,) = receiver.received()
    assert request.headers["x-batchfetch-signature"].startswith("sha256=")
    assert webhooks.verify(secret, request.body, request.headers["x-batchfetch-signature"])
    body = request.json()
    assert body["job"]["id"] == str(job.pk) and body["job"]["status"] == "completed"
    assert body["events"] == ["finished"] and body["url"] == f"/jobs/{job.pk}/"
    assert (body["job"]["succeeded"], body["job"]["failed"]) == (1, 1)


def attempts_counted(result: str) -> float:
    """The worker's batchfetch_notification_attempts_total for webhooks ending in `result`."""
    labels = {"channel": "webhook", "result": result}
    return REGISTRY.get_sample_value("batchfetch_notification_attempts_total", labels) or 0.0


async def test_a_500_is_retried_until_the_receiver_takes_it(ann: Any) -> None:
    before = {result: attempts_counted(result) for result in ("retry", "delivered", "failed")}
    with webhook_receiver(script=[500, 500]) as receiver:
        await sync_to_async(monitored)(ann, notify_url=receiver.url(), notify_on=["failed"])
        await pass_until(lambda: Delivery.objects.filter(status="delivered").exists())
        assert len(receiver.received()) == 3
    delivery = await Delivery.objects.aget()
    codes = [a.status_code async for a in delivery.attempt_rows.order_by("id")]
    assert codes == [500, 500, 200] and delivery.attempts == 3
    counted = {result: attempts_counted(result) - seen for result, seen in before.items()}
    assert counted == {"retry": 2, "delivered": 1, "failed": 0}  # the worker's metrics


async def test_a_4xx_is_final(ann: Any) -> None:
    with webhook_receiver(script=[404]) as receiver:
        await sync_to_async(monitored)(ann, notify_url=receiver.url(), notify_on=["finished"])
        await pass_until(lambda: Delivery.objects.exclude(status__in=["pending", "sending"]).exists())
        assert len(receiver.received()) == 1
    assert (await Delivery.objects.aget()).status == "failed"


async def test_retries_stop_after_the_give_up_time(ann: Any, settings: Any) -> None:
    settings.MONITOR_WEBHOOK_GIVE_UP = 0.3
    with webhook_receiver(script=[503] * 100) as receiver:
        await sync_to_async(monitored)(ann, notify_url=receiver.url(), notify_on=["finished"])
        await pass_until(lambda: Delivery.objects.filter(status="failed").exists())
        assert 1 <= len(receiver.received()) < 20


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:{port}/hook"])
async def test_the_ssrf_guard_refuses_and_records(ann: Any, settings: Any, target: str) -> None:
    settings.FETCH_ALLOW_PRIVATE_ADDRESSES = False
    with webhook_receiver() as receiver:
        url = target.format(port=receiver.port)
        await sync_to_async(monitored)(ann, notify_url=url, notify_on=["finished"])
        await pass_until(lambda: Delivery.objects.filter(status="refused").exists())
        assert receiver.received() == []
    delivery = await Delivery.objects.aget()
    assert "SSRF guard" in delivery.last_error and delivery.attempts == 1


async def test_a_name_resolving_to_loopback_is_refused(ann: Any, settings: Any) -> None:
    settings.FETCH_ALLOW_PRIVATE_ADDRESSES = False
    with webhook_receiver() as receiver:
        await sync_to_async(monitored)(ann, notify_url=f"http://localhost:{receiver.port}/", notify_on=["finished"])
        await pass_until(lambda: Delivery.objects.filter(status="refused").exists())
        assert receiver.received() == []


async def test_email_through_the_locmem_backend(ann: Any) -> None:
    job = await sync_to_async(monitored)(ann, notify_email="ops@example.com", notify_on=["failed"])
    await pass_until(lambda: Delivery.objects.filter(status="delivered").exists())
    (message,) = mail.outbox
    assert message.to == ["ops@example.com"] and "failed" in message.subject
    assert f"/jobs/{job.pk}/" in message.body


def test_events_decide_whether_anything_is_sent(ann: Any) -> None:
    job = finished_job(ann, [("http://a.example/", "succeeded", 200, "")])
    JobMonitor.objects.create(job=job, notify_url="http://hooks.example/", notify_on=["failed", "changed"])
    assert settle.settle_finished()[0].job == job
    assert Delivery.objects.count() == 0  # nothing failed, no previous run to change from
    assert settle.settle_finished() == []  # once


def test_job_api_takes_notify_fields(ann: Any) -> None:
    client = Client()
    client.force_login(ann)
    data = {"urls": ["http://a.example/"], "notify_url": "http://hooks.example/x", "notify_on": ["changed"]}
    response = client.post("/api/jobs/", json.dumps(data), content_type="application/json")
    assert response.status_code == 201
    monitor = JobMonitor.objects.get(job_id=response.json()["id"])
    assert (monitor.notify_url, monitor.notify_on) == ("http://hooks.example/x", ["changed"])
    bad = client.post("/api/jobs/", json.dumps({**data, "notify_on": ["never"]}), content_type="application/json")
    assert bad.status_code == 400 and "notify_on" in bad.json()["errors"]


def test_account_page_shows_a_new_secret_once(ann: Any) -> None:
    client = Client()
    client.force_login(ann)
    assert "Create secret" in client.get("/account/").content.decode()
    shown = client.post("/account/", {"action": "rotate"}).content.decode()
    secret = ann.webhook_secret.secret if hasattr(ann, "webhook_secret") else None
    from jobs.monitoring_models import WebhookSecret

    secret = WebhookSecret.objects.get(user=ann).secret
    assert secret in shown
    assert secret not in client.get("/account/").content.decode()
