"""robots.txt: fetched once per origin and obeyed; missing allows all, unreachable disallows all."""

from __future__ import annotations

import httpx

from jobs.engine.pipeline import fetch_all
from jobs.engine.values import FetchOptions, FetchResult
from tests.target import TargetServer

ROBOTS = "User-agent: *\nDisallow: /ok/private\n\nUser-agent: batchfetch\nDisallow: /ok/mine\n"


async def test_robots_txt_is_fetched_once_and_obeyed(client: httpx.AsyncClient) -> None:
    options = FetchOptions(timeout=5, respect_robots=True)
    urls = [f"/ok/{i}" for i in range(10)] + ["/ok/mine/1", "/ok/private/x"] * 3
    results: list[FetchResult] = []
    with TargetServer(robots=ROBOTS) as robots_server:
        items = [(i, robots_server.url(path)) for i, path in enumerate(urls)]
        await fetch_all(client, items, concurrency=8, options=options, on_result=results.append)
        requests = robots_server.stats().requests

    by_position = {r.position: r for r in results}
    assert all(by_position[i].outcome == "succeeded" for i in range(10))
    # /ok/mine is disallowed for our agent by name; /ok/private only by the * group, which does not apply
    # to us since a group naming us replaces it (RFC 9309 2.2.1).
    assert [by_position[i].error_class for i in range(10, 16)] == ["robots", "", "robots", "", "robots", ""]
    refused = by_position[10]
    assert (refused.outcome, refused.attempts, refused.status_code) == ("failed", 0, None)
    assert refused.error == f"robots: disallowed by {robots_server.url('/robots.txt')}"
    assert requests == 10 + 3 + 1  # the allowed URLs, and robots.txt once


async def test_robots_txt_missing_allows_all_and_unreachable_disallows_all(
    target: TargetServer, client: httpx.AsyncClient, refused_url: str
) -> None:
    options = FetchOptions(timeout=5, respect_robots=True)
    results: list[FetchResult] = []
    await fetch_all(client, [(0, target.url("/ok")), (1, refused_url + "x")], concurrency=2, options=options,
                    on_result=results.append)  # fmt: skip

    by_position = {r.position: r for r in results}
    assert by_position[0].outcome == "succeeded"  # /robots.txt is a 404 there
    assert by_position[1].error_class == "robots"
    assert "could not be read (connect: " in by_position[1].error
