"""The worker's client: FetchClient keeps no cookies, LeanAiohttpTransport speaks HTTP on a real loopback server.

The fetch outcomes through make_client (statuses, errors, deadlines, limits)
are covered in test_fetcher.py; these tests pin what the two classes add.
"""

from __future__ import annotations

import gc
import socket
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx
import pytest
from aiohttp import web

from jobs.engine import fetcher
from jobs.engine.fetcher import FetchClient, make_client
from jobs.engine.transport import LeanAiohttpTransport
from tests.target import TargetServer


@pytest.fixture(scope="module")
def server() -> Iterator[TargetServer]:
    with TargetServer(body_bytes=300) as target:
        yield target


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(max_connections=4) as client:
        yield client


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


async def test_make_client_uses_the_lean_transport(client: httpx.AsyncClient) -> None:
    assert isinstance(client, FetchClient)
    assert isinstance(client._transport, LeanAiohttpTransport)


async def test_response_status_reason_headers_and_body(server: TargetServer, client: httpx.AsyncClient) -> None:
    response = await client.get(server.url("/ok"))
    assert (response.status_code, response.reason_phrase, response.http_version) == (200, "OK", "HTTP/1.1")
    assert response.elapsed.total_seconds() > 0  # set once the body is read, as httpx's client does
    assert response.headers["content-length"] == "300"
    assert response.content == b"x" * 300
    missing = await client.get(server.url("/status/404"))
    assert (missing.status_code, missing.reason_phrase) == (404, "Not Found")


async def test_request_headers_and_body_reach_the_server(client: httpx.AsyncClient) -> None:
    received: dict[str, object] = {}

    async def echo(request: web.Request) -> web.Response:
        received.update(method=request.method, agent=request.headers.get("user-agent"), body=await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        response = await client.post(f"http://127.0.0.1:{port}/echo", content=b"payload", headers={"user-agent": "t/1"})
    finally:
        await runner.cleanup()
    assert response.text == "ok"
    assert received == {"method": "POST", "agent": "t/1", "body": b"payload"}


async def test_connection_errors_become_httpx_errors_caused_by_aiohttp(client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get(url)
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)


async def test_a_port_out_of_range_is_an_invalid_url(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.InvalidURL):
        await client.get("http://127.0.0.1:99999/")


async def test_streaming_request_bodies_are_refused(server: TargetServer, client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"x"

    with pytest.raises(httpx.UnsupportedProtocol, match="streaming request bodies"):
        await client.post(server.url("/ok"), content=chunks())


async def test_fetching_leaves_no_reference_cycles(server: TargetServer, client: httpx.AsyncClient) -> None:
    """A response, its body stream and its request are freed by reference counting as soon as they are
    dropped: cycles would leave them to the cyclic collector, whose passes cost the worker ~10% of its CPU."""
    urls = [(position, server.url(f"/ok/{position}")) for position in range(20)]
    results: list[fetcher.FetchResult] = []
    await fetcher.fetch_all(client, urls[:2], concurrency=2, on_result=results.append)  # connections, caches
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # keep what the collection finds unreachable, to look at it
    try:
        await fetcher.fetch_all(client, urls, concurrency=4, on_result=results.append)
        gc.collect()
        # By type: the target server runs in a thread of this process, and its garbage is not ours.
        ours = (httpx.Request, httpx.Response, httpx.Headers, httpx.URL, fetcher._Timed, fetcher.FetchResult)
        cyclic = [type(thing).__name__ for thing in gc.garbage if isinstance(thing, ours)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert [r.status_code for r in results[2:]] == [200] * 20
    assert cyclic == []
