"""The authorization matrix: every HTTP route and WebSocket route × who asks → the answer.

The rows (tests/web/matrix.py, shared with the CSP page scan of
test_security.py) are checked against the URL resolver and jobs.web.routing, so
a route added without a row there fails `test_every_route_has_a_row`.

Who asks: `anon` (nobody), `owner` (ann, who owns the job), `other` (bob),
`staff` (an is_staff superuser: the operator), `token` (ann's API token as
`Authorization: Bearer`, no session). Answers: an HTTP status, or "login"
(302 to the login page: /accounts/login/ for pages, /admin/login/ for the admin).

Staff semantics (deliberate): staff run the admin, where they see every job;
through the pages, the JSON API and the sockets a staff user is an ordinary
user and sees only their own jobs (someone else's job is a 404, as for anyone).
A non-owner always gets 404 for a job, never 403, so job ids cannot be probed.
Admin routes of registered models are generated from the admin registry
(every one is behind the admin's staff check); all other rows are explicit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient, Client
from django.urls import get_resolver

from jobs.models import Job
from jobs.web.routing import websocket_urlpatterns
from project.asgi import application
from tests.web.helpers import http_patterns
from tests.web.matrix import ALL_HTTP_ROWS, LOGIN, ROLES, WS_ROWS, Row, http_client, make_world


def test_every_route_has_a_row() -> None:
    assert sorted(http_patterns(get_resolver().url_patterns)) == sorted(row.pattern for row in ALL_HTTP_ROWS)
    assert [str(entry.pattern) for entry in websocket_urlpatterns] == [row.pattern for row in WS_ROWS]


# --- the world (tests/web/matrix.py) --------------------------------------------------------------


@pytest.fixture
def world(django_user_model: Any, settings: Any, tmp_path: Path) -> dict[str, Any]:
    return make_world(django_user_model, settings, tmp_path / "media")


def answer(response: Any, path: str) -> int | str:
    if response.status_code == 302:
        login = "/admin/login/" if path.startswith("/admin/") else "/accounts/login/"
        if response["Location"].startswith(login):
            return LOGIN
    return response.status_code


def request(client: Client, method: str, path: str, data: dict[str, Any]) -> Any:
    if "json" in data:
        return client.generic(method, path, data["json"], content_type="application/json")
    if method == "POST":
        return client.post(path, data)
    return client.generic(method, path)


# transaction=True: submit and cancel run their queries in database_sync_to_async threads.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("row", ALL_HTTP_ROWS, ids=lambda row: row.pattern or "<root>")
def test_http_matrix(world: dict[str, Any], row: Row) -> None:
    path = row.path.format(**world["ids"])
    observed = {
        method: {role: answer(request(http_client(world, role), method, path, row.data), path) for role in ROLES}
        for method in row.answers
    }
    assert observed == row.answers


@pytest.mark.django_db
def test_non_owner_gets_the_same_404_as_an_unknown_id(world: dict[str, Any]) -> None:
    client = http_client(world, "other")
    theirs = client.get(f"/api/jobs/{world['ids']['job']}/")
    unknown = client.get("/api/jobs/00000000-0000-4000-8000-000000000000/")
    assert (theirs.status_code, theirs.content) == (unknown.status_code, unknown.content) == (404, b'{"error": "not found"}')
    assert isinstance(world["ids"]["job"], type(Job().pk)) and Job._meta.pk.get_internal_type() == "UUIDField"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("method, suffix", [
    ("POST", "cancel/"), ("POST", "pause/"), ("POST", "resume/"), ("POST", "rerun-failed/"), ("GET", "stats/"),
    ("GET", "results/"), ("GET", "results.jsonl"), ("GET", "results.csv"), ("GET", "results/0/body"),
    ("GET", "results/0/"), ("GET", "bodies.zip"),
])  # fmt: skip
def test_every_job_route_answers_a_non_owner_as_an_unknown_id(world: dict[str, Any], method: str, suffix: str) -> None:
    """Byte for byte, and without touching the job: no route tells "not yours" from "no such job"."""
    before = list(Job.objects.values_list("pk", "status").order_by("pk"))
    client = http_client(world, "other")
    theirs = client.generic(method, f"/api/jobs/{world['ids']['job']}/{suffix}")
    unknown = client.generic(method, f"/api/jobs/00000000-0000-4000-8000-000000000000/{suffix}")
    assert (theirs.status_code, theirs.content) == (unknown.status_code, unknown.content) == (404, b'{"error": "not found"}')
    assert theirs["Content-Type"] == "application/json"
    assert list(Job.objects.values_list("pk", "status").order_by("pk")) == before


async def ws_answer(path: str, role: str, world: dict[str, Any]) -> int:
    headers = [(b"origin", b"http://localhost:8000"), (b"host", b"localhost:8000")]
    if role == "token":
        headers.append((b"authorization", f"Bearer {world['secret']}".encode()))
    elif role in world["users"]:
        client = AsyncClient()
        await client.aforce_login(world["users"][role])
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    await communicator.disconnect()
    return 200 if connected else 403


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("row", WS_ROWS, ids=lambda row: row.pattern or "<catch-all>")
async def test_websocket_matrix(world_async: dict[str, Any], row: Row) -> None:
    path = row.path.format(**world_async["ids"])
    observed = {"CONNECT": {role: await ws_answer(path, role, world_async) for role in ROLES}}
    assert observed == row.answers


@pytest.fixture
def world_async(transactional_db: None, django_user_model: Any, settings: Any, tmp_path: Path) -> dict[str, Any]:
    """The world for async tests: created in a committed transaction the consumers' threads can see."""
    return make_world(django_user_model, settings, tmp_path / "media")
