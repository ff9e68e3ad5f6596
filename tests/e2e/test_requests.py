"""Batches of requests end to end: the API, daphne, the real `runworker`, and a loopback echo target.

The target records what it received, so the assertions are about what was
really sent: every body once, each with the job's token; secrets dropped on a
redirect to another port; POSTs retried only when the job says so. Then the
token is looked for everywhere it must not be: API answers, the admin, the
page, the exports, the worker's log and every text column of the database.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connection

from tests.echo import EchoServer
from tests.liveclient import TERMINAL, Client
from tests.services import LiveStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SECRET = "tok-" + secrets.token_hex(12)
TOKEN = f"Bearer {SECRET}"
LINES = 1000
NAME = "posts-" + secrets.token_hex(4)


@pytest.fixture
def credentials(transactional_db: None, django_user_model: Any) -> tuple[str, str]:
    """A superuser committed to the test database (daphne sees it; the admin lets it in)."""
    password = secrets.token_urlsafe(16)
    django_user_model.objects.create_superuser(username="alice", password=password, email="")
    return "alice", password


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


@pytest.fixture
def other() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


async def submit(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    status, job = await client.post_json("/api/jobs/", body)
    assert status == 201, job
    return job


async def finished(client: Client, job_id: str, timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, job = await client.get_json(f"/api/jobs/{job_id}/")
        assert status == 200
        if job["status"] in TERMINAL:
            return job
        client.stack.assert_alive()
        assert time.monotonic() < deadline, f"job never finished: {job}"
        await asyncio.sleep(0.2)


async def text_of(client: Client, path: str) -> str:
    async with client.session.get(client.stack.url(path)) as response:
        assert response.status == 200, path
        return await response.text()


def database_text() -> str:
    """Every stored value: SQLite's whole dump, or on PostgreSQL every text and JSON column of every table.

    Runs in a thread of its own: its connection is closed at the end, so the test database can be dropped."""
    try:
        return _dump()
    finally:
        connection.close()


def _dump() -> str:
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        return "\n".join(connection.connection.iterdump())
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
            " AND data_type IN ('text', 'character varying', 'json', 'jsonb', 'bytea')"
        )
        columns = cursor.fetchall()
        dumped = []
        for table, column in columns:
            cursor.execute(f'SELECT "{column}"::text FROM "{table}"')
            dumped.extend(f"{table}.{column}: {value}" for (value,) in cursor.fetchall() if value is not None)
    return "\n".join(dumped)


async def test_a_jsonl_job_of_posts_sends_each_body_once_with_the_token_and_never_shows_it(
    live_stack: LiveStack, credentials: tuple[str, str], echo: EchoServer
) -> None:
    jsonl = "\n".join(json.dumps({"url": echo.url(f"/echo/{i}"), "json": {"record": i}}) for i in range(LINES))
    async with Client.logged_in(live_stack, *credentials) as client:
        created = await submit(client, {"requests": jsonl, "method": "POST", "headers": {"Authorization": TOKEN},
                                        "concurrency": 50, "per_host": 50, "retries": 0, "name": NAME})  # fmt: skip
        job = await finished(client, created["id"])
        assert (job["status"], job["succeeded"], job["total"]) == ("completed", LINES, LINES), job
        seen = echo.seen()
        assert len(seen) == LINES
        assert sorted(s.path for s in seen) == sorted(f"/echo/{i}" for i in range(LINES))
        for request in seen:
            assert request.method == "POST"
            assert request.header("Authorization") == TOKEN
            assert request.header("Content-Type") == "application/json"
            assert json.loads(request.body) == {"record": int(request.path.rsplit("/", 1)[1])}

        assert job["request"]["headers"] == {"Authorization": "•••"}
        assert job["request"]["method"] == "POST"
        shown = [
            json.dumps(job),
            json.dumps((await client.get_json(f"/api/jobs/{job['id']}/results/?limit=1000"))[1]),
            await text_of(client, f"/api/jobs/{job['id']}/results.csv"),
            await text_of(client, f"/api/jobs/{job['id']}/results.jsonl"),
            await text_of(client, f"/jobs/{job['id']}/"),
            await text_of(client, f"/admin/jobs/job/{job['id']}/change/"),
            await text_of(client, "/admin/jobs/job/"),
        ]
        exported = (await client.get_jsonl(f"/api/jobs/{job['id']}/results.jsonl"))[5]
        assert exported["request"]["method"] == "POST" and exported["request"]["headers"]["Authorization"] == "•••"
        assert exported["request"]["body_sha256"]
    for text in shown:
        assert SECRET not in text
    assert "•••" in shown[-3] and "•••" in shown[-2]  # the page and the admin show the header, masked
    await live_stack_stopped(live_stack)
    logs = "".join(process.log_path.read_text() for process in live_stack.processes)
    assert f"Job {job['id']} claimed" in logs  # the worker's log is really there
    assert SECRET not in logs
    dump = await asyncio.to_thread(database_text)
    assert NAME in dump  # the dump really holds the job
    assert dump.count(SECRET) == 0


async def live_stack_stopped(stack: LiveStack) -> None:
    """Stop the worker, so its log is complete (daphne's too)."""
    for process in stack.processes:
        await asyncio.to_thread(process.stop)


async def test_redirects_and_retries_follow_the_rules_through_the_worker(
    live_stack: LiveStack, credentials: tuple[str, str], echo: EchoServer, other: EchoServer
) -> None:
    away = echo.url("/redirect/307?to=" + quote(other.url("/echo/away"), safe=""))
    async with Client.logged_in(live_stack, *credentials) as client:
        moved = await submit(client, {"requests": [{"url": away, "json": {"a": 1}}], "method": "POST",
                                      "headers": {"Authorization": TOKEN, "X-Keep": "k"}})  # fmt: skip
        plain = await submit(client, {"requests": [{"url": echo.url("/status/503?n=plain")}], "method": "POST",
                                      "retries": 2})  # fmt: skip
        unsafe = await submit(client, {"requests": [{"url": echo.url("/status/503?n=unsafe")}], "method": "POST",
                                       "retries": 2, "retry_unsafe": True})  # fmt: skip
        for created in (moved, plain, unsafe):
            await finished(client, created["id"])
        [row] = (await client.get_json(f"/api/jobs/{plain['id']}/results/"))[1]["results"]
        assert row["attempts"] == 1 and "retry_unsafe" in row["error"]
    [first] = [s for s in echo.seen() if s.path.startswith("/redirect/")]
    [second] = other.seen()
    assert first.header("Authorization") == TOKEN
    assert (second.method, second.body, second.header("Authorization")) == ("POST", b'{"a":1}', None)
    assert second.header("X-Keep") == "k"
    assert len([s for s in echo.seen() if s.path == "/status/503?n=plain"]) == 1
    assert len([s for s in echo.seen() if s.path == "/status/503?n=unsafe"]) == 3
