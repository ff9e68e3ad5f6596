"""The politeness options through the API and the form, and the per-host figures of the stats API."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from django.test import AsyncClient, Client

from jobs.engine.fleetscripts import host_keys, tag_key
from jobs.models import Job
from jobs.worker.hostlimits import job_tag
from tests.web.helpers import URLS, post_json

# As in the API tests: the in-memory channel layer, and ann's logged-in client (ann_async_client).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("memory_layer")]


RATE_ERROR = "must be a number of requests per second from 0.01 to 1000, or empty for no rate"


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"per_host_rate": -1}, {"per_host_rate": RATE_ERROR}),
        ({"per_host_rate": "fast"}, {"per_host_rate": RATE_ERROR}),
        ({"per_host_rate": 0}, {"per_host_rate": RATE_ERROR}),
        ({"per_host_rate": 1001}, {"per_host_rate": RATE_ERROR}),
        ({"per_host_rate": True}, {"per_host_rate": RATE_ERROR}),
        ({"autothrottle": "yes"}, {"autothrottle": "must be true or false, not a string"}),
        ({"autothrottle": 1}, {"autothrottle": "must be true or false, not a number"}),
    ],
)
async def test_bad_politeness_options_are_400_naming_the_field(
    ann_async_client: AsyncClient, body: dict[str, Any], errors: dict[str, str]
) -> None:
    response = await post_json(ann_async_client, "/api/jobs/", {"urls": URLS, **body})
    assert response.status_code == 400
    assert response.json()["errors"] == errors
    assert await Job.objects.acount() == 0


async def test_politeness_options_are_stored_and_shown(ann_async_client: AsyncClient) -> None:
    response = await post_json(ann_async_client, "/api/jobs/",
                               {"urls": URLS, "per_host_rate": "2.5", "autothrottle": True})
    assert response.status_code == 201, response.json()
    assert (response.json()["per_host_rate"], response.json()["autothrottle"]) == (2.5, True)
    job = await Job.objects.aget(pk=response.json()["id"])
    assert (job.per_host_rate, job.autothrottle) == (2.5, True)
    default = await post_json(ann_async_client, "/api/jobs/", {"urls": URLS})
    assert (default.json()["per_host_rate"], default.json()["autothrottle"]) == (None, False)


def test_the_form_takes_the_politeness_options(ann: Any) -> None:
    browser = Client()
    browser.force_login(ann)
    page = browser.get("/").content.decode()
    assert 'name="per_host_rate"' in page and 'name="autothrottle"' in page
    browser.post("/", {"urls": "http://a.example/", "per_host_rate": "0.5", "autothrottle": "on"})
    job = Job.objects.get(owner=ann)
    assert (job.per_host_rate, job.autothrottle) == (0.5, True)
    assert "≤ 0.5/s, autothrottle" in browser.get(f"/jobs/{job.pk}/").content.decode()
    bad = browser.post("/", {"urls": "http://a.example/", "per_host_rate": "fast"})
    assert bad.status_code == 400
    assert "Rate per host" in bad.content.decode()


async def test_the_stats_show_each_host_in_flight_over_the_fleet_and_the_limit(
    ann_async_client: AsyncClient, ann: Any, redis_url: str
) -> None:
    response = await post_json(ann_async_client, "/api/jobs/", {"urls": URLS, "per_host": 6, "autothrottle": True})
    job_id = response.json()["id"]
    host, idle = "a.example:80", "b.example:80"
    with redis.Redis.from_url(redis_url) as r:
        seconds, _ = r.time()
        keys = host_keys(host)
        r.sadd(tag_key(job_tag(job_id)), host, idle)
        # Three holders of two workers, one of them expired (a killed worker's), and an adaptive limit of 3.7.
        r.zadd(keys["hold"], {"w1:a:1": (seconds + 30) * 1000, "w2:b:1": (seconds + 30) * 1000,
                              "w3:c:1": (seconds - 5) * 1000})  # fmt: skip
        r.hset(keys["state"], mapping={"limit": "3.7", "pause": (seconds + 10) * 1000})
        try:
            stats = (await ann_async_client.get(f"/api/jobs/{job_id}/stats/")).json()
        finally:
            r.delete(*keys.values(), tag_key(job_tag(job_id)))
    assert stats["hosts"][0]["host"] == host
    assert (stats["hosts"][0]["in_flight"], stats["hosts"][0]["limit"]) == (2, 3)
    assert 8 < stats["hosts"][0]["paused_for"] <= 11
    assert stats["hosts"][1] == {"host": idle, "in_flight": 0, "limit": 1, "paused_for": 0.0}
