"""Writing a batch of results onto pending rows (jobs/queue/resultwrite.py), on the real database."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs import serializers
from jobs.engine.values import FetchResult
from jobs.models import Job, Result
from jobs.queue import control, resultwrite

pytestmark = pytest.mark.django_db(transaction=True)


def make_job(owner: Any, n: int) -> Job:
    urls = [f"http://127.0.0.1:9/{i}" for i in range(n)]
    return control.enqueue_job(owner=owner, urls=urls, name="", concurrency=2, timeout=1)


def fetched(position: int, outcome: str = "succeeded", status: int | None = 200, **details: Any) -> FetchResult:
    return FetchResult(
        position=position, url=f"http://127.0.0.1:9/{position}", outcome=outcome, status_code=status,
        bytes=10 + position, elapsed_ms=3, attempts=2, error="" if outcome == "succeeded" else "boom: é \"q\"",
        **details,
    )  # fmt: skip


@pytest.fixture(params=["single statement", pytest.param("select then update", marks=pytest.mark.sqlite)])
def path(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both SQLite paths (the second one serves SQLite < 3.35); PostgreSQL has one."""
    if request.param == "select then update":
        monkeypatch.setattr(resultwrite, "sqlite_single_statement", lambda: False)
    return str(request.param)


def test_writes_exactly_the_pending_rows_and_returns_them_in_position_order(owner: Any, path: str) -> None:
    job = make_job(owner, 6)
    earlier = timezone.now() - timedelta(hours=1)
    Result.objects.filter(job=job, position=1).update(outcome="failed", status_code=404, fetched_at=earlier)
    at = timezone.now()
    batch = [
        fetched(4, final_url="http://127.0.0.1:9/x", content_type="text/plain", sha256="ab" * 32, redirects=1),
        fetched(1),  # already final: dropped
        fetched(0, "failed", None, error_class="timeout"),
        fetched(2, "failed", 500),
        fetched(2, body_path="bodies/2"),  # given twice: the last one is written
    ]

    with transaction.atomic():
        rows = resultwrite.write_results(job.pk, batch, at)

    assert [row.position for row in rows] == [0, 2, 4]
    stored = {row.position: row for row in Result.objects.filter(job=job)}
    for row in rows:
        assert serializers.result_to_dict(row) == serializers.result_to_dict(stored[row.position])
        assert (row.id, row.body, row.fetched_at) == (stored[row.position].id, stored[row.position].body, at)
    assert (stored[2].outcome, stored[2].body, stored[0].status_code) == ("succeeded", "bodies/2", None)
    assert (stored[1].outcome, stored[1].status_code, stored[1].fetched_at) == ("failed", 404, earlier)
    assert (stored[3].outcome, stored[5].outcome) == ("pending", "pending")
    with transaction.atomic():
        assert resultwrite.write_results(job.pk, [fetched(0), fetched(4)], at) == []
        assert resultwrite.write_results(job.pk, [], at) == []


def test_any_text_is_written_as_it_is(owner: Any, path: str) -> None:
    """The batch travels as JSON (SQLite, PostgreSQL): escapes, non-BMP characters and long values arrive intact."""
    job = make_job(owner, 2)
    odd = 'back\\slash \\u00e9 "quoted" \ttab\nnewline 😀 é'
    long_url = "http://127.0.0.1:9/" + "é/%2F" * 500
    with transaction.atomic():
        rows = resultwrite.write_results(
            job.pk, [fetched(0, "failed", None, error_class="other", final_url=long_url, content_type=odd)],
            timezone.now(),
        )
    stored = Result.objects.get(job=job, position=0)
    assert (stored.error, stored.final_url, stored.content_type) == ('boom: é "q"', long_url, odd)
    assert (rows[0].final_url, rows[0].content_type) == (long_url, odd)


def test_headers_are_stored_as_pairs_and_no_response_as_null(owner: Any, path: str) -> None:
    job = make_job(owner, 2)
    headers = (("Content-Type", "text/plain"), ("X-Odd", 'é "q" \\ 😀'), ("X-Odd", "again"))
    with transaction.atomic():
        rows = resultwrite.write_results(
            job.pk, [fetched(0, headers=headers), fetched(1, "failed", None, error_class="connect")], timezone.now()
        )
    assert rows[0].headers == headers and rows[1].headers is None
    stored = {row.position: row for row in Result.objects.filter(job=job).defer(None)}
    assert stored[0].headers == [list(pair) for pair in headers]
    assert stored[1].headers is None
    assert "headers" in Result.objects.get(job=job, position=0).get_deferred_fields()  # lists leave them out


def test_only_the_given_job_is_written(owner: Any, path: str) -> None:
    job, other = make_job(owner, 3), make_job(owner, 3)
    with transaction.atomic():
        assert [row.position for row in resultwrite.write_results(job.pk, [fetched(1)], timezone.now())] == [1]
    assert not Result.objects.filter(job=other).exclude(outcome="pending").exists()


@pytest.mark.sqlite
def test_sqlite_statement_looks_rows_up_by_job_and_position(owner: Any) -> None:
    """Joined naively, SQLite scans the job's pending rows once per batch row: the CTE keeps it on the index."""
    if not resultwrite.sqlite_single_statement():
        pytest.skip("this SQLite takes the select-then-update path")
    job = make_job(owner, 10)
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        resultwrite.write_results(job.pk, [fetched(3), fetched(7)], timezone.now())
    (update,) = [query["sql"] for query in queries.captured_queries if "json_each" in query["sql"]]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {update}")
        plan = [detail for *_ids, detail in cursor.fetchall()]
    assert any("USING INDEX" in step and "job_id=? AND position=?" in step for step in plan), plan
    assert not [step for step in plan if step.startswith("SCAN") and "VIRTUAL TABLE" not in step and step != "SCAN v"]
