"""WebSocket consumers (jobs/web/consumers.py) through the real ASGI application.

project.asgi.application is the full stack (origin validator, session auth,
routing), with an in-memory channel layer instead of Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import AsyncClient
from django.utils import timezone

from jobs import serializers
from jobs.models import Job, Result
from jobs.progress import groups
from project.asgi import application
from tests.conftest import redis_layer_settings

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("memory_layer")]

ORIGIN = b"http://localhost:8000"
TIMEOUT = 3


async def session_cookie(user: Any) -> bytes:
    client = AsyncClient()
    await client.aforce_login(user)
    name = django_settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


def communicator(path: str, *, cookie: bytes | None = None, origin: bytes = ORIGIN) -> WebsocketCommunicator:
    headers = [(b"origin", origin), (b"host", b"localhost:8000")]
    if cookie is not None:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, path, headers=headers)


@asynccontextmanager
async def connected(path: str, user: Any) -> AsyncIterator[WebsocketCommunicator]:
    socket = communicator(path, cookie=await session_cookie(user))
    accepted, _ = await socket.connect(timeout=TIMEOUT)
    assert accepted
    try:
        yield socket
    finally:
        await socket.disconnect()


async def refused(socket: WebsocketCommunicator) -> bool:
    accepted, _ = await socket.connect(timeout=TIMEOUT)
    await socket.disconnect(timeout=TIMEOUT)
    return not accepted


async def make_job(owner: Any, *, status: str = "queued", **fields: Any) -> Job:
    urls = [f"http://t.example/{i}" for i in range(5)]
    job = await Job.objects.acreate(owner=owner, concurrency=2, timeout=1.0, total=len(urls), status=status, **fields)
    await Result.objects.abulk_create(Result(job=job, position=i, url=url) for i, url in enumerate(urls))
    return job


async def receive(socket: WebsocketCommunicator) -> dict[str, Any]:
    return await socket.receive_json_from(timeout=TIMEOUT)


# --- /ws/jobs/<id>/ ----------------------------------------------------------------------------------------


async def test_job_socket_starts_with_a_snapshot_of_final_rows_newest_first(ann: Any) -> None:
    job = await make_job(ann, status="running", succeeded=2, failed=1)
    now = timezone.now()
    for position, outcome, age in [(0, "succeeded", 3), (3, "failed", 1), (1, "succeeded", 2)]:
        await Result.objects.filter(job=job, position=position).aupdate(
            outcome=outcome, status_code=200 if outcome == "succeeded" else 500, fetched_at=now - timedelta(seconds=age)
        )

    async with connected(f"/ws/jobs/{job.id}/", ann) as socket:
        message = await receive(socket)

    assert message["type"] == "snapshot"
    assert (message["job"]["id"], message["job"]["status"], message["job"]["done"]) == (str(job.id), "running", 3)
    assert [(row["position"], row["outcome"]) for row in message["results"]] == [
        (3, "failed"), (1, "succeeded"), (0, "succeeded")
    ]


async def test_progress_is_relayed_until_the_terminal_status(ann: Any) -> None:
    job = await make_job(ann, status="running")
    layer = get_channel_layer()
    async with connected(f"/ws/jobs/{job.id}/", ann) as socket:
        snapshot = await receive(socket)
        state = snapshot["job"]
        row = {"position": 4, "url": "http://t.example/4", "outcome": "succeeded", "status_code": 200, "bytes": 5,
               "elapsed_ms": 7, "attempts": 1, "error": "", "fetched_at": timezone.now().isoformat()}
        running = {**state, "succeeded": 1, "done": 1}
        await layer.group_send(groups.job_group(job.id), {"type": "job.progress", "job": running, "results": [row]})
        assert await receive(socket) == {"type": "progress", "job": running, "results": [row]}

        finished = {**state, "status": "completed", "succeeded": 5, "done": 5}
        await layer.group_send(groups.job_group(job.id), {"type": "job.progress", "job": finished, "results": []})
        assert (await receive(socket))["job"]["status"] == "completed"

        # A late message from before the end must not make the page go back to "running".
        await layer.group_send(groups.job_group(job.id), {"type": "job.progress", "job": running, "results": [row]})
        assert await socket.receive_nothing(timeout=0.3)


async def test_cancel_over_the_socket(ann: Any) -> None:
    job = await make_job(ann)
    async with connected(f"/ws/jobs/{job.id}/", ann) as socket:
        assert (await receive(socket))["type"] == "snapshot"
        await socket.send_json_to({"type": "cancel"})
        message = await receive(socket)
        assert message["type"] == "progress"
        assert (message["job"]["status"], message["job"]["cancelled"]) == ("cancelled", 5)
        # The group copy of the same update is not sent twice.
        assert await socket.receive_nothing(timeout=0.3)
    await job.arefresh_from_db()
    assert job.status == "cancelled"


async def test_cancel_of_running_job_reads_cancelling(ann: Any) -> None:
    job = await make_job(ann, status="running")
    async with connected(f"/ws/jobs/{job.id}/", ann) as socket:
        await receive(socket)
        await socket.send_json_to({"type": "cancel"})
        assert (await receive(socket))["job"]["status"] == "cancelling"


async def test_bad_client_messages_get_errors_not_a_crash(ann: Any) -> None:
    job = await make_job(ann)
    async with connected(f"/ws/jobs/{job.id}/", ann) as socket:
        await receive(socket)
        await socket.send_to(text_data="{not json")
        assert await receive(socket) == {
            "type": "error", "errors": {"body": "malformed JSON: Expecting property name enclosed in double quotes"
                                        " at line 1 column 2"}
        }
        await socket.send_to(bytes_data=b"\x00")
        assert (await receive(socket))["errors"] == {"body": "binary frames are not supported; send JSON text"}
        await socket.send_json_to(["cancel"])
        assert (await receive(socket))["errors"] == {"type": "send a JSON object with a string 'type'"}
        await socket.send_json_to({"type": "dance"})
        assert (await receive(socket))["errors"] == {"type": "unknown message type 'dance' (expected 'cancel')"}
        # Still alive and working.
        await socket.send_json_to({"type": "cancel"})
        assert (await receive(socket))["job"]["status"] == "cancelled"


async def test_job_socket_refuses_anonymous(ann: Any) -> None:
    job = await make_job(ann)
    assert await refused(communicator(f"/ws/jobs/{job.id}/"))


async def test_job_socket_refuses_other_users(ann: Any, bob: Any) -> None:
    job = await make_job(ann)
    assert await refused(communicator(f"/ws/jobs/{job.id}/", cookie=await session_cookie(bob)))


async def test_job_socket_refuses_foreign_origin(ann: Any) -> None:
    job = await make_job(ann)
    socket = communicator(f"/ws/jobs/{job.id}/", cookie=await session_cookie(ann), origin=b"http://evil.example")
    assert await refused(socket)


@pytest.mark.parametrize("path", ["/ws/jobs/not-a-uuid/", "/ws/jobs/00000000-0000-0000-0000-000000000000/",
                                  "/ws/elsewhere/"])
async def test_unknown_paths_and_ids_are_refused(ann: Any, path: str) -> None:
    assert await refused(communicator(path, cookie=await session_cookie(ann)))


async def test_the_owner_is_accepted_where_others_are_refused(ann: Any) -> None:
    # The positive control of the refusal tests: same headers, the owner's cookie.
    job = await make_job(ann)
    socket = communicator(f"/ws/jobs/{job.id}/", cookie=await session_cookie(ann))
    accepted, _ = await socket.connect(timeout=TIMEOUT)
    assert accepted
    await socket.disconnect()


# --- /ws/jobs/ ---------------------------------------------------------------------------------------------


async def test_list_socket_sends_own_jobs_then_updates(ann: Any, bob: Any) -> None:
    now = timezone.now()
    older = await make_job(ann, name="older", created_at=now - timedelta(minutes=5))
    newer = await make_job(ann, name="newer", created_at=now)
    await make_job(bob, name="bob's")

    async with connected("/ws/jobs/", ann) as socket:
        snapshot = await receive(socket)
        assert snapshot["type"] == "jobs"
        assert [job["id"] for job in snapshot["jobs"]] == [str(newer.id), str(older.id)]

        changed = {**serializers.job_to_dict(older), "status": "running"}
        await get_channel_layer().group_send(groups.user_group(ann.pk), {"type": "job.update", "job": changed})
        assert await receive(socket) == {"type": "job", "job": changed}


async def test_submit_over_the_list_socket(ann: Any) -> None:
    async with connected("/ws/jobs/", ann) as socket:
        assert (await receive(socket))["jobs"] == []
        await socket.send_json_to({"type": "submit", "urls": ["http://a.example/", "http://b.example/"], "name": "ws"})
        messages = [await receive(socket), await receive(socket)]

    # The reply, and the list update every page of the user gets (in either order).
    submitted = next(message for message in messages if message["type"] == "submitted")
    update = next(message for message in messages if message["type"] == "job")
    assert update["job"]["id"] == submitted["job"]["id"]
    job = await Job.objects.aget(pk=submitted["job"]["id"])
    assert (job.owner_id, job.name, job.total, job.status) == (ann.pk, "ws", 2, "queued")
    assert await Result.objects.filter(job=job).acount() == 2


async def test_invalid_submit_gets_errors_and_creates_nothing(ann: Any) -> None:
    async with connected("/ws/jobs/", ann) as socket:
        await receive(socket)
        await socket.send_json_to({"type": "submit", "urls": ["http://a.example/", "gopher://b/"], "concurrency": 0})
        assert await receive(socket) == {
            "type": "error",
            "errors": {
                "urls": [{"index": 1, "value": "gopher://b/", "error": "scheme must be http or https, not 'gopher'"}],
                "concurrency": "must be an integer from 1 to 1000",
            },
        }
        await socket.send_json_to({"type": "cancel"})
        assert (await receive(socket))["errors"] == {"type": "unknown message type 'cancel' (expected 'submit')"}
    assert await Job.objects.acount() == 0


async def test_list_socket_refuses_anonymous_and_foreign_origin(ann: Any) -> None:
    assert await refused(communicator("/ws/jobs/"))
    assert await refused(communicator("/ws/jobs/", cookie=await session_cookie(ann), origin=b"http://evil.example"))


async def test_submit_over_the_socket_takes_fetch_options(ann: Any) -> None:
    async with connected("/ws/jobs/", ann) as socket:
        assert (await receive(socket))["jobs"] == []
        await socket.send_json_to({"type": "submit", "urls": ["http://a.example/"], "retries": 5, "per_host": 2,
                                   "respect_robots": True})
        messages = [await receive(socket), await receive(socket)]

    submitted = next(message for message in messages if message["type"] == "submitted")
    assert (submitted["job"]["retries"], submitted["job"]["per_host"], submitted["job"]["respect_robots"]) == (5, 2, True)
    job = await Job.objects.aget(pk=submitted["job"]["id"])
    assert (job.retries, job.per_host, job.respect_robots, job.save_bodies) == (5, 2, True, False)


async def test_an_idle_socket_on_redis_outlives_the_layers_blocking_wait(ann: Any, settings: Any, redis_url: str) -> None:
    """channels-redis waits for messages 5 s at a time; a socket with nothing to say for longer stays open.

    With redis-py's default socket timeout (also 5 s), each idle wait ended in "Timeout reading from ...",
    which closed the page's socket with 1011 every few seconds.
    """
    settings.CHANNEL_LAYERS = redis_layer_settings(redis_url)
    job = await make_job(ann, status="queued")
    async with connected(f"/ws/jobs/{job.id}/", ann) as socket:
        snapshot = await receive(socket)
        assert await socket.receive_nothing(timeout=6.5)  # idle past the 5 s wait, and still open
        running = {**snapshot["job"], "status": "running"}
        await get_channel_layer().group_send(groups.job_group(job.id), groups.progress_message(running, []))
        assert (await receive(socket))["job"]["status"] == "running"
