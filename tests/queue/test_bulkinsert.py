"""Pending rows inserted by jobs.queue.bulkinsert are the rows bulk_create would write (on SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction
from django.forms.models import model_to_dict

from jobs.models import Job, Result
from jobs.queue.bulkinsert import CHUNK, insert_pending_results

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def owner(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("bulk", password="x")


def _row(result: Result) -> dict[str, Any]:
    data = model_to_dict(result)
    data.pop("id")
    data.pop("job")
    return data


def test_rows_match_what_bulk_create_writes(owner: Any) -> None:
    urls = ["http://a.example/", "http://b.example/ü?q=1", "http://c.example/" + "x" * 2000]
    fast = Job.objects.create(owner=owner, total=len(urls), concurrency=1, timeout=5)
    slow = Job.objects.create(owner=owner, total=len(urls), concurrency=1, timeout=5)
    with transaction.atomic():
        insert_pending_results(fast, urls)
    Result.objects.bulk_create(Result(job=slow, position=i, url=url) for i, url in enumerate(urls))

    fast_rows = [_row(r) for r in Result.objects.filter(job=fast).order_by("position")]
    slow_rows = [_row(r) for r in Result.objects.filter(job=slow).order_by("position")]
    assert fast_rows == slow_rows
    assert [r["url"] for r in fast_rows] == urls
    assert {r["outcome"] for r in fast_rows} == {Result.Outcome.PENDING}


def test_more_rows_than_one_chunk_keep_their_positions(owner: Any) -> None:
    n = CHUNK * 2 + 7
    job = Job.objects.create(owner=owner, total=n, concurrency=1, timeout=5)
    with transaction.atomic():
        insert_pending_results(job, [f"http://h.example/{i}" for i in range(n)])
    positions = list(Result.objects.filter(job=job).order_by("position").values_list("position", "url"))
    assert positions == [(i, f"http://h.example/{i}") for i in range(n)]


def test_a_failed_insert_leaves_no_rows(owner: Any) -> None:
    job = Job.objects.create(owner=owner, total=2, concurrency=1, timeout=5)
    with pytest.raises(Exception), transaction.atomic():  # noqa: B017 - the backend's IntegrityError class
        insert_pending_results(job, ["http://a.example/", "http://b.example/"])
        insert_pending_results(job, ["http://a.example/"])  # position 0 again: the unique constraint fails
    assert not Result.objects.filter(job=job).exists()
