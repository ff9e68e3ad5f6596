"""The worker's client: FetchClient keeps no cookies, LeanAiohttpTransport speaks HTTP on a real loopback server.

The fetch outcomes through make_client (statuses, errors, deadlines, limits)
are covered in the engine's other tests; FetchClient's own in test_client.py.
"""

from __future__ import annotations

import gc
import socket
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx
import pytest
from aiohttp import web

from jobs.engine.client import FetchClient, _Timed, make_client
from jobs.engine.pipeline import fetch_all
from jobs.engine.transport import LeanAiohttpTransport
from jobs.engine.values import FetchResult
from tests.target import TargetServer


@pytest.fixture(scope="module")
def server() -> Iterator[TargetServer]:
    with TargetServer(body_bytes=300) as target:
        yield target


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(max_connections=4) as client:
        yield client


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
    results: list[FetchResult] = []
    await fetch_all(client, urls[:2], concurrency=2, on_result=results.append)  # connections, caches
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # keep what the collection finds unreachable, to look at it
    try:
        await fetch_all(client, urls, concurrency=4, on_result=results.append)
        gc.collect()
        # By type: the target server runs in a thread of this process, and its garbage is not ours.
        ours = (httpx.Request, httpx.Response, httpx.Headers, httpx.URL, _Timed, FetchResult)
        cyclic = [type(thing).__name__ for thing in gc.garbage if isinstance(thing, ours)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert [r.status_code for r in results[2:]] == [200] * 20
    assert cyclic == []
