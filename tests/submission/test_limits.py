"""Abuse limits (jobs/submission/limits.py and the WebSocket message cap): clear 429/413-style answers, nothing stored.

The per-minute counter lives in the session's real Redis; conftest empties the
counters before every test.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

import aiohttp
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import AsyncClient, Client

from jobs.models import Job, Result
from jobs.submission import limits
from jobs.web import tokens
from project.asgi import application
from tests import services
from tests.services import LiveStack

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("memory_layer")]

BODY = {"urls": ["http://a.example/", "http://b.example/"]}


async def submit(client: AsyncClient, body: Any = BODY) -> Any:
    return await client.post("/api/jobs/", json.dumps(body), content_type="application/json")


async def stored() -> tuple[int, int]:
    return await Job.objects.acount(), await Result.objects.acount()


async def test_queued_jobs_per_user_limit_is_429_and_stores_nothing(
    ann_async_client: AsyncClient, settings: Any
) -> None:
    settings.JOBS_MAX_QUEUED_PER_USER = 2
    assert (await submit(ann_async_client)).status_code == 201
    assert (await submit(ann_async_client)).status_code == 201

    refused = await submit(ann_async_client)

    assert refused.status_code == 429
    assert refused.json() == {"errors": {"jobs": "you have 2 queued jobs (at most 2); wait for some to start or cancel them"}}
    assert int(refused["Retry-After"]) > 0
    assert await stored() == (2, 4)
    # Another user is not affected, and a job leaving the queue frees a slot.
    bob = AsyncClient()
    await bob.aforce_login(await get_user_model().objects.acreate(username="bob"))
    assert (await submit(bob)).status_code == 201
    await Job.objects.filter(owner__username="ann").order_by("created_at").aupdate(status=Job.Status.RUNNING)
    assert (await submit(ann_async_client)).status_code == 201


async def test_submissions_per_minute_limit_counts_in_redis(
    ann_async_client: AsyncClient, ann: Any, settings: Any
) -> None:
    settings.JOBS_SUBMISSIONS_PER_MINUTE = 3
    for _ in range(3):
        assert (await submit(ann_async_client)).status_code == 201

    refused = await submit(ann_async_client)

    assert refused.status_code == 429
    assert refused.json()["errors"]["jobs"].startswith("too many submissions: at most 3 a minute; try again in ")
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert await stored() == (3, 6)
    # The counter is in Redis, not in this process: the next count continues from 4.
    count, _ = await limits.count_submission(ann.pk)
    assert count == 5


async def test_invalid_submissions_do_not_use_up_the_rate(ann_async_client: AsyncClient, settings: Any) -> None:
    settings.JOBS_SUBMISSIONS_PER_MINUTE = 1
    for _ in range(3):
        assert (await submit(ann_async_client, {"urls": ["nope"]})).status_code == 400
    assert (await submit(ann_async_client)).status_code == 201


async def test_redis_down_fails_open_with_a_warning(
    ann_async_client: AsyncClient, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.JOBS_SUBMISSIONS_PER_MINUTE = 1
    settings.REDIS_URL = f"redis://127.0.0.1:{services.free_port()}/0"  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="jobs.submission.limits"):
        for _ in range(3):
            assert (await submit(ann_async_client)).status_code == 201
    assert "failing open" in caplog.text


def test_form_over_the_limit_says_so_with_429(settings: Any, django_user_model: Any) -> None:
    settings.JOBS_MAX_QUEUED_PER_USER = 1
    user = django_user_model.objects.create_user(username="carol")
    client = Client()
    client.force_login(user)
    assert client.post("/", {"urls": "http://a.example/"}).status_code == 302

    page = client.post("/", {"urls": "http://a.example/"})

    assert page.status_code == 429
    assert b"you have 1 queued jobs (at most 1)" in page.content
    assert Job.objects.count() == 1


async def socket(user: Any, path: str = "/ws/jobs/") -> WebsocketCommunicator:
    http = AsyncClient()
    await http.aforce_login(user)
    headers = [(b"origin", b"http://localhost:8000"), (b"host", b"localhost:8000"),
               (b"cookie", f"sessionid={http.cookies['sessionid'].value}".encode())]
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    await communicator.receive_json_from(timeout=5)  # the snapshot
    return communicator


async def test_websocket_submit_over_a_limit_is_an_error_message(ann: Any, settings: Any) -> None:
    settings.JOBS_MAX_QUEUED_PER_USER = 0
    communicator = await socket(ann)
    await communicator.send_json_to({"type": "submit", **BODY})
    reply = await communicator.receive_json_from(timeout=5)
    await communicator.disconnect()
    assert reply == {"type": "error", "errors": {"jobs": "you have 0 queued jobs (at most 0); wait for some to start or cancel them"}}
    assert await stored() == (0, 0)


async def test_oversize_websocket_message_is_refused_and_the_socket_stays_usable(ann: Any, settings: Any) -> None:
    settings.WS_MAX_MESSAGE_BYTES = 200
    communicator = await socket(ann)
    big = json.dumps({"type": "submit", "urls": ["http://a.example/" + "é" * 100]}, ensure_ascii=False)
    assert len(big) < 200 < len(big.encode())  # counted in bytes, not characters

    await communicator.send_to(text_data=big)
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "error", "errors": {"body": "message larger than 200 bytes"}
    }
    await communicator.send_json_to({"type": "submit", "urls": ["http://a.example/"]})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "submitted"
    await communicator.disconnect()
    assert await stored() == (1, 1)


# --- real daphne processes ---------------------------------------------------------------------------


@pytest.fixture
def token_user(transactional_db: None, django_user_model: Any) -> tuple[Any, str]:
    user = django_user_model.objects.create_user(username="dora", password=secrets.token_urlsafe(12))
    return user, tokens.create_token(user=user).secret


async def test_rate_limit_is_shared_with_another_web_process(
    live_database_url: str, redis_url: str, tmp_path: Any, token_user: tuple[Any, str], settings: Any
) -> None:
    settings.JOBS_SUBMISSIONS_PER_MINUTE = 3
    user, secret = token_user
    client, auth = AsyncClient(), {"Authorization": f"Bearer {secret}"}
    extra = {"JOBS_SUBMISSIONS_PER_MINUTE": "3"}
    with services.live_stack(database_url=live_database_url, redis_url=redis_url, workdir=tmp_path / "stack",
                             extra_env=extra) as stack:
        # Two submissions in this process, then two through daphne (another process): the 4th is refused.
        for _ in range(2):
            here = await client.post("/api/jobs/", json.dumps(BODY), content_type="application/json", headers=auth)
            assert here.status_code == 201
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {secret}"}) as session:
            async with session.post(stack.url("/api/jobs/"), json=BODY) as third:
                assert third.status == 201, await third.text()
            async with session.post(stack.url("/api/jobs/"), json=BODY) as fourth:
                assert fourth.status == 429, await fourth.text()
                assert "at most 3 a minute" in (await fourth.json())["errors"]["jobs"]
    assert await sync_to_async(Job.objects.filter(owner=user).count)() == 3


async def test_daphne_answers_oversize_messages_then_drops_frames_past_its_hard_cap(
    live_stack: LiveStack, token_user: tuple[Any, str]
) -> None:
    user, _ = token_user
    http = AsyncClient()
    await http.aforce_login(user)
    cookies = {"sessionid": http.cookies["sessionid"].value}
    async with aiohttp.ClientSession(cookies=cookies, cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        url = f"{live_stack.ws_url}/ws/jobs/"
        async with session.ws_connect(url, origin=live_stack.base_url, heartbeat=None, max_msg_size=0) as ws:
            assert (await ws.receive_json(timeout=10))["type"] == "jobs"
            # Over WS_MAX_MESSAGE_BYTES (512 KiB), under daphne's cap: an error reply, the socket stays open.
            await ws.send_str(json.dumps({"type": "submit", "urls": ["http://a.example/" + "x" * 600_000]}))
            assert await ws.receive_json(timeout=10) == {
                "type": "error", "errors": {"body": "message larger than 524288 bytes"}
            }
            # Over daphne's --websocket_max_message_size (1 MiB): autobahn fails the connection (1009, and
            # it may drop TCP before the client reads the close frame: then aiohttp reports 1006).
            # Or it drops TCP while the frame is still going out: then the send itself fails.
            try:
                await ws.send_str("x" * (2 * 1024 * 1024))
            except ConnectionError:
                pass
            else:
                closing = await ws.receive(timeout=10)
                assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                assert ws.close_code in (1009, 1006)
    assert await Job.objects.acount() == 0


@pytest.mark.parametrize(
    ("overrides", "error_id"),
    [
        ({"JOBS_SUBMISSIONS_PER_MINUTE": 0}, "jobs.E004"),
        ({"JOBS_MAX_QUEUED_PER_USER": -1}, "jobs.E004"),
        ({"WS_MAX_MESSAGE_BYTES": 0}, "jobs.E005"),
        ({"WS_MAX_MESSAGE_BYTES": 2 * 1024 * 1024}, "jobs.E005"),
    ],
)
def test_limit_settings_are_checked(settings: Any, overrides: dict[str, int], error_id: str) -> None:
    from jobs.checks import check_limits

    assert check_limits() == []
    for name, value in overrides.items():
        setattr(settings, name, value)
    assert [error.id for error in check_limits()] == [error_id]


def test_admin_rerun_is_not_held_to_the_owners_limits(admin_client: Client, django_user_model: Any, settings: Any) -> None:
    from jobs.queue import control

    owner = django_user_model.objects.create_user(username="erin")
    job = control.enqueue_job(owner=owner, urls=["http://a.example/"], name="n", concurrency=1, timeout=1)
    settings.JOBS_MAX_QUEUED_PER_USER = 1  # erin is at her limit

    response = admin_client.post("/admin/jobs/job/", {"action": "rerun_jobs", "_selected_action": [job.pk]})

    assert response.status_code == 302
    assert Job.objects.filter(owner=owner).count() == 2
