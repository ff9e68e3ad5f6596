"""Shared helpers of the web tests: API calls and jobs (the JSON API tests), the form's errors (the page tests),
the URL patterns of the resolver (the authorization matrix and the schema)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from typing import Any

from django.test import AsyncClient
from django.urls import URLPattern, URLResolver
from django.utils import timezone

from jobs.models import Job, Result

URLS = ["http://a.example/", "http://b.example/x", "https://c.example/?q=1"]


# --- the JSON API ---------------------------------------------------------------------------------


async def make_job(owner: Any, *, urls: list[str] = URLS, status: str = "queued", **fields: Any) -> Job:
    job = await Job.objects.acreate(owner=owner, concurrency=5, timeout=3.0, total=len(urls), status=status, **fields)
    await Result.objects.abulk_create(Result(job=job, position=i, url=url) for i, url in enumerate(urls))
    return job


async def make_finished_job(owner: Any, count: int, *, name: str = "") -> Job:
    """A completed job whose even rows succeeded and odd rows failed."""
    now = timezone.now()
    job = await Job.objects.acreate(owner=owner, name=name, concurrency=5, timeout=3.0, total=count,
                                    status="completed", succeeded=(count + 1) // 2, failed=count // 2)
    rows = [
        Result(job=job, position=i, url=f"http://h{i % 7}.example/{i}", outcome="succeeded", status_code=200,
               bytes=i, elapsed_ms=i % 50, attempts=1, fetched_at=now)
        if i % 2 == 0 else
        Result(job=job, position=i, url=f"http://h{i % 7}.example/{i}", outcome="failed", status_code=None,
               bytes=0, elapsed_ms=3, attempts=1, error="connect: refused, \"quoted\"\nline", fetched_at=now)
        for i in range(count)
    ]
    # Insert in reverse so that "submission order" cannot come from insertion order.
    await Result.objects.abulk_create(reversed(rows))
    return job


async def post_json(client: AsyncClient, path: str, data: Any, **extra: Any) -> Any:
    body = data if isinstance(data, str) else json.dumps(data)
    return await client.post(path, body, content_type="application/json", **extra)


# --- the pages ------------------------------------------------------------------------------------


def error_items(response: Any) -> list[str]:
    """The texts of the <li> items in the form's error summary."""
    body = response.content.decode()
    summary = body[body.index('id="form-errors"') :]
    summary = summary[: summary.index("</div>\n", summary.index('class="error-list"') + 30)]
    return [html.unescape(re.sub(r"\s+", " ", item).strip()) for item in re.findall(r"<li>(.*?)</li>", summary, re.S)]


def only_job(owner: Any) -> Job:
    jobs = list(Job.objects.filter(owner=owner))
    assert len(jobs) == 1, jobs
    return jobs[0]


# --- routes ---------------------------------------------------------------------------------------


def http_patterns(patterns: list[Any], prefix: str = "") -> Iterator[str]:
    """Every route pattern under `patterns` with its resolvers' prefixes, as the matrix and the schema name them."""
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from http_patterns(entry.url_patterns, prefix + str(entry.pattern))
        else:
            assert isinstance(entry, URLPattern)
            yield prefix + str(entry.pattern)
