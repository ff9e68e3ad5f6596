"""The worker's client: FetchClient keeps no cookies and builds what httpx builds; make_client's limits."""

from __future__ import annotations

import asyncio
import gc
import warnings

import httpx
import pytest

from jobs.engine.client import FetchClient, make_client
from jobs.engine.fetch import fetch_one
from jobs.engine.pipeline import fetch_all
from jobs.engine.values import FetchResult
from tests.target import TargetServer


async def test_fetch_client_never_sends_cookies_a_response_set() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        return httpx.Response(200, headers={"set-cookie": "session=secret; Path=/"})

    async with FetchClient(transport=httpx.MockTransport(handler)) as client:
        await client.get("http://one.example/")
        await client.get("http://one.example/")
        await client.get("http://two.example/")
    assert seen == [None, None, None]
    assert not client.cookies


async def test_fetch_client_refuses_cookies() -> None:
    client = FetchClient()
    with pytest.raises(ValueError, match="no cookies"):
        client.cookies = {"a": "b"}
    await client.aclose()


@pytest.mark.parametrize(
    ("method", "url", "options"),
    [
        ("GET", "http://h.example:8080/a?b=1", {}),
        ("get", "https://h.example/", {"timeout": httpx.Timeout(3, read=None)}),
        ("POST", "http://h.example/", {}),  # httpx adds Content-Length: 0: its own path
        ("GET", "http://h.example/", {"headers": {"X-A": "1"}}),
        ("GET", "http://h.example/", {"params": {"q": "1"}}),
    ],
)
async def test_fetch_client_builds_the_request_httpx_builds(method: str, url: str, options: dict) -> None:
    """The short path of FetchClient.build_request gives what httpx.AsyncClient's would."""
    settings = {"headers": {"User-Agent": "t/1"}, "timeout": httpx.Timeout(7)}
    async with FetchClient(transport=httpx.MockTransport(lambda r: httpx.Response(200)), **settings) as ours:
        mine = ours.build_request(method, url, **options)
    async with httpx.AsyncClient(**settings) as plain:
        theirs = plain.build_request(method, url, **options)
    assert (mine.method, mine.url, mine.headers.multi_items()) == (theirs.method, theirs.url, theirs.headers.multi_items())
    assert (mine.extensions, mine.content) == (theirs.extensions, theirs.content)


async def test_fetch_client_send_keeps_what_httpx_send_does() -> None:
    """Auth from the URL, event hooks, response.request, and errors naming their request."""
    seen: list[httpx.Request] = []
    hooked: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/down":
            raise httpx.ConnectError("refused")
        return httpx.Response(200, content=b"body")

    async def hook(response: httpx.Response) -> None:
        hooked.append(response.status_code)

    async with FetchClient(transport=httpx.MockTransport(handler)) as client:
        response = await client.get("http://user:pw@h.example/")
        assert seen[-1].headers["authorization"] == httpx.BasicAuth("user", "pw")._auth_header
        plain = await client.send(client.build_request("GET", "http://h.example/"))
        assert (plain.content, plain.request.url) == (b"body", "http://h.example/")
        with pytest.raises(httpx.ConnectError) as error:
            await client.get("http://h.example/down")
        assert error.value.request.url == "http://h.example/down"
        client.event_hooks = {"response": [hook]}
        await client.get("http://h.example/")
    assert response.status_code == 200 and hooked == [200]
    with pytest.raises(RuntimeError, match="closed"):
        await client.get("http://h.example/")


async def test_client_closes_without_resource_warnings(target: TargetServer) -> None:
    client = make_client(max_connections=4)
    results = await asyncio.gather(*(fetch_one(client, i, target.url("/ok"), timeout=5) for i in range(4)))
    assert {r.outcome for r in results} == {"succeeded"}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await client.aclose()
        del client
        gc.collect()
        await asyncio.sleep(0.01)
    assert [str(w.message) for w in caught] == []


async def test_connection_limit_of_the_client(target: TargetServer) -> None:
    results: list[FetchResult] = []
    items = [(i, target.url("/delay/200")) for i in range(9)]

    async with make_client(max_connections=3) as client:
        await fetch_all(client, items, concurrency=6, timeout=5, on_result=results.append)

    assert len(results) == 9
    assert target.stats().peak_in_flight == 3
