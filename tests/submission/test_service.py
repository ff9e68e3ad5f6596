"""Submit and cancel: the job stored, then announced to the workers and the owner's pages (jobs/submission/service.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model

from jobs.models import Job, Result
from jobs.progress import groups
from jobs.submission import service
from jobs.submission.validation import validate_submission

pytestmark = pytest.mark.usefixtures("memory_layer")


async def receive(layer: Any, channel: str) -> dict[str, Any]:
    return await asyncio.wait_for(layer.receive(channel), timeout=2)


# --- submit and cancel ----------------------------------------------------------------------------


@pytest.fixture
def owner(db: None) -> Any:
    return get_user_model().objects.create_user("ann", password="pw")


def test_submit_stores_job_and_pending_rows_in_order(owner: Any) -> None:
    urls = ["http://b.example/", "http://a.example/", "http://b.example/"]
    job = service.submit(owner, validate_submission({"urls": urls, "name": "x"}))
    job.refresh_from_db()
    assert (job.owner, job.name, job.status, job.total) == (owner, "x", "queued", 3)
    assert (job.concurrency, job.timeout) == (10, 10.0)
    rows = list(Result.objects.filter(job=job).values_list("position", "url", "outcome"))
    assert rows == [
        (0, "http://b.example/", "pending"),
        (1, "http://a.example/", "pending"),
        (2, "http://b.example/", "pending"),
    ]


def test_cancel_queued_job(owner: Any) -> None:
    job = service.submit(owner, validate_submission({"urls": ["http://a.example/", "http://b.example/"]}))
    cancelled = service.cancel(job.id)
    assert (cancelled.status, cancelled.cancelled) == ("cancelled", 2)
    assert set(Result.objects.filter(job=job).values_list("outcome", flat=True)) == {"cancelled"}


@pytest.mark.django_db(transaction=True)
async def test_asubmit_wakes_workers_and_updates_the_owner_pages() -> None:
    user = await get_user_model().objects.acreate(username="bob")
    layer = get_channel_layer()
    listener = await layer.new_channel()
    await layer.group_add(groups.WAKEUP_GROUP, listener)
    await layer.group_add(groups.user_group(user.pk), listener)

    job = await service.asubmit(user, validate_submission({"urls": ["http://a.example/"]}))

    assert await Job.objects.filter(pk=job.pk, status="queued").aexists()
    received = [await receive(layer, listener), await receive(layer, listener)]
    assert {"type": "worker.wakeup"} in received
    (update,) = [message for message in received if message["type"] == "job.update"]
    assert update["job"]["id"] == str(job.id)
    assert update["job"]["status"] == "queued"


@pytest.mark.django_db(transaction=True)
async def test_acancel_publishes_the_new_state() -> None:
    user = await get_user_model().objects.acreate(username="cid")
    job = await service.asubmit(user, validate_submission({"urls": ["http://a.example/"]}))
    layer = get_channel_layer()
    listener = await layer.new_channel()
    await layer.group_add(groups.user_group(user.pk), listener)

    cancelled = await service.acancel(job.id)

    assert cancelled.status == "cancelled"
    message = await receive(layer, listener)
    assert (message["type"], message["job"]["id"], message["job"]["status"]) == ("job.update", str(job.id), "cancelled")
