"""The fetch engine against a real loopback HTTP server (tests/target.py).

Concurrency bounds are asserted where they matter: on the server, which counts
the requests it has in flight.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import socket
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
import httpx
import pytest
from aiohttp.client_reqrep import ConnectionKey

from jobs.engine.fetcher import FetchResult, fetch_all, fetch_one, make_client
from tests.target import Stats, TargetServer


@pytest.fixture(scope="module")
def server() -> Iterator[TargetServer]:
    with TargetServer(body_bytes=64) as target:
        yield target


@pytest.fixture
def target(server: TargetServer) -> TargetServer:
    """The module's server, idle and with fresh counters."""
    server.wait_for(lambda s: s.in_flight == 0)
    server.reset_stats()
    return server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(max_connections=50) as client:
        yield client


async def until(target: TargetServer, predicate: Callable[[Stats], bool], timeout: float = 5.0) -> Stats:
    """Wait (without blocking the loop) until the server's stats match."""
    deadline = time.monotonic() + timeout
    while not predicate(stats := target.stats()):
        assert time.monotonic() < deadline, f"server stats never matched: {stats}"
        await asyncio.sleep(0.01)
    return stats


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback URL nothing listens on: the port stays bound (so nobody else takes it) but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"


# fetch_one -------------------------------------------------------------------------------------------------------


async def test_success_reports_status_and_body_bytes(target: TargetServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 7, target.url("/delay/100?x=1"), timeout=5)
    other = await fetch_one(client, 8, target.url("/bytes/100000"), timeout=5)

    assert result == FetchResult(
        position=7,
        url=target.url("/delay/100?x=1"),
        outcome="succeeded",
        status_code=200,
        bytes=64,
        elapsed_ms=result.elapsed_ms,
        attempts=1,
        error="",
        final_url=target.url("/delay/100?x=1"),
        content_type="application/octet-stream",
        sha256=hashlib.sha256(b"x" * 64).hexdigest(),
    )
    assert 100 <= result.elapsed_ms < 1000
    assert (other.outcome, other.status_code, other.bytes) == ("succeeded", 200, 100_000)


@pytest.mark.parametrize(
    ("code", "outcome", "error"),
    [
        (404, "failed", "http_status: 404 Not Found"),
        (503, "failed", "http_status: 503 Service Unavailable"),
        (302, "succeeded", ""),  # redirects are not followed: a 3xx is a response with status < 400
    ],
)
async def test_status_code_decides_the_outcome(
    target: TargetServer, client: httpx.AsyncClient, code: int, outcome: str, error: str
) -> None:
    result = await fetch_one(client, 0, target.url(f"/status/{code}"), timeout=5)

    assert (result.outcome, result.status_code, result.error, result.bytes) == (outcome, code, error, 7)


async def test_connection_refused_is_a_connect_error(client: httpx.AsyncClient, refused_url: str) -> None:
    result = await fetch_one(client, 3, refused_url, timeout=5)

    assert (result.outcome, result.status_code, result.bytes) == ("failed", None, 0)
    assert result.error.startswith("connect: Cannot connect to host 127.0.0.1:"), result.error


async def test_tls_to_a_plain_http_port_is_a_tls_error(target: TargetServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, target.url("/ok").replace("http://", "https://"), timeout=5)

    assert result.outcome == "failed"
    assert result.error.startswith("tls: "), result.error


@pytest.mark.parametrize(
    "url", ["not a url", "", "ftp://127.0.0.1/", "http://", "http://127.0.0.1:99999/", "http://[::1/"]
)
async def test_invalid_url(client: httpx.AsyncClient, url: str) -> None:
    result = await fetch_one(client, 0, url, timeout=5)

    assert (result.outcome, result.status_code, result.url) == ("failed", None, url)
    assert result.error.startswith("invalid_url: "), result.error


@pytest.mark.parametrize(
    "path",
    [
        "/hang",  # no response at all
        "/slow-body?chunks=40&interval_ms=50",  # a chunk every 50 ms: httpx's read timeout would never fire
    ],
)
async def test_deadline_covers_the_whole_fetch(target: TargetServer, client: httpx.AsyncClient, path: str) -> None:
    started = time.monotonic()
    result = await fetch_one(client, 0, target.url(path), timeout=0.5)
    elapsed = time.monotonic() - started

    assert 0.5 <= elapsed < 1.0
    assert (result.outcome, result.error) == ("failed", "timeout: no complete response within 0.5 s")
    if path != "/hang":
        assert result.status_code == 200 and 0 < result.bytes < 40 * 16  # what arrived before the deadline
    await until(target, lambda s: s.in_flight == 0, timeout=1)  # the connection was closed, not leaked


async def test_connection_reset_mid_body_is_a_protocol_error(target: TargetServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, target.url("/reset"), timeout=5)

    assert (result.outcome, result.status_code, result.bytes) == ("failed", 200, 64)
    assert result.error.startswith("protocol: "), result.error


def _dns_error_as_httpx_aiohttp_raises_it() -> Exception:
    """httpx_aiohttp wraps aiohttp's DNS error in httpx.ConnectTimeout (seen with a real lookup of a .invalid host)."""
    key = ConnectionKey("nowhere.invalid", 80, False, True, None, None, None)
    cause = aiohttp.ClientConnectorDNSError(key, socket.gaierror(-2, "Name or service not known"))
    error = httpx.ConnectTimeout(str(cause))
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (httpx.ConnectError("[Errno -2] Name or service not known"), "dns: [Errno -2] Name or service not known"),
        (
            _dns_error_as_httpx_aiohttp_raises_it(),
            "dns: Cannot connect to host nowhere.invalid:80 ssl:default [Name or service not known]",
        ),
        (httpx.ConnectError("[Errno 111] Connection refused"), "connect: [Errno 111] Connection refused"),
        (httpx.ConnectTimeout("timed out"), "timeout: no complete response within 2 s"),
        (httpx.RemoteProtocolError("peer closed connection"), "protocol: peer closed connection"),
        (httpx.ReadError("reset\nby peer"), "protocol: reset by peer"),
        (RuntimeError("boom"), "other: RuntimeError: boom"),
    ],
)
async def test_exception_mapping(exc: Exception, error: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        result = await fetch_one(client, 1, "http://example.test/", timeout=2)

    assert (result.outcome, result.error, result.status_code, result.bytes) == ("failed", error, None, 0)


async def test_cancelling_fetch_one_propagates(target: TargetServer, client: httpx.AsyncClient) -> None:
    task = asyncio.create_task(fetch_one(client, 0, target.url("/hang"), timeout=30))
    await until(target, lambda s: s.in_flight == 1)
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    await until(target, lambda s: s.in_flight == 0, timeout=1)


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


# fetch_all -------------------------------------------------------------------------------------------------------


async def test_fetch_all_keeps_exactly_concurrency_requests_in_flight(
    target: TargetServer, client: httpx.AsyncClient
) -> None:
    results: list[FetchResult] = []
    items = [(i, target.url(f"/delay/200?i={i}")) for i in range(15)]

    await fetch_all(client, items, concurrency=5, timeout=5, on_result=results.append)

    assert sorted(r.position for r in results) == list(range(15))
    assert {r.outcome for r in results} == {"succeeded"}
    # The server counts a request out after its last write returns, which can be just after the client has it.
    assert await until(target, lambda s: s.in_flight == 0) == Stats(requests=15, in_flight=0, peak_in_flight=5)


async def test_connection_limit_of_the_client(target: TargetServer) -> None:
    results: list[FetchResult] = []
    items = [(i, target.url("/delay/200")) for i in range(9)]

    async with make_client(max_connections=3) as client:
        await fetch_all(client, items, concurrency=6, timeout=5, on_result=results.append)

    assert len(results) == 9
    assert target.stats().peak_in_flight == 3


async def test_global_limit_caps_concurrent_runs(target: TargetServer, client: httpx.AsyncClient) -> None:
    limit = asyncio.Semaphore(4)
    first: list[FetchResult] = []
    second: list[FetchResult] = []

    def run(name: str, results: list[FetchResult]) -> Awaitable[None]:
        items = [(i, target.url(f"/delay/200?run={name}")) for i in range(8)]
        return fetch_all(client, items, concurrency=5, timeout=5, on_result=results.append, global_limit=limit)

    await asyncio.gather(run("first", first), run("second", second))

    assert sorted(r.position for r in first) == sorted(r.position for r in second) == list(range(8))
    assert await until(target, lambda s: s.in_flight == 0) == Stats(requests=16, in_flight=0, peak_in_flight=4)


async def test_one_result_per_item_from_an_async_iterable(
    target: TargetServer, client: httpx.AsyncClient, refused_url: str
) -> None:
    urls = [target.url("/ok"), target.url("/status/500"), refused_url, "not a url", target.url("/hang")] * 6

    async def pages() -> AsyncIterator[tuple[int, str]]:
        for start in range(0, len(urls), 4):  # like the worker reading pages of pending rows
            await asyncio.sleep(0)
            for position in range(start, min(start + 4, len(urls))):
                yield position, urls[position]

    results: list[FetchResult] = []
    await fetch_all(client, pages(), concurrency=8, timeout=0.3, on_result=results.append)

    assert sorted(r.position for r in results) == list(range(len(urls)))
    errors = [r.error.split(":")[0] for r in sorted(results, key=lambda r: r.position)]
    assert errors[:5] == ["", "http_status", "connect", "invalid_url", "timeout"]
    assert errors == errors[:5] * 6


async def test_cancelling_fetch_all_stops_all_requests(target: TargetServer, client: httpx.AsyncClient) -> None:
    results: list[FetchResult] = []
    endless = ((i, target.url("/hang")) for i in itertools.count())  # only cancellation can end this run
    task = asyncio.create_task(fetch_all(client, endless, concurrency=6, timeout=30, on_result=results.append))
    await until(target, lambda s: s.in_flight == 6)

    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done, "fetch_all did not stop when cancelled"
    with pytest.raises(asyncio.CancelledError):
        await task

    stats = await until(target, lambda s: s.in_flight == 0, timeout=1)
    await asyncio.sleep(0.3)
    assert target.stats() == stats  # no further request arrived
    assert stats.requests == 6 and results == []


async def test_stop_lets_requests_in_flight_finish_and_starts_no_new_one(
    target: TargetServer, client: httpx.AsyncClient
) -> None:
    """A graceful stop: the queued items (and consumers waiting for a global slot) never reach the server."""
    results: list[FetchResult] = []
    stop = asyncio.Event()
    items = [(i, target.url(f"/delay/300?i={i}")) for i in range(20)]
    limit = asyncio.Semaphore(2)  # 4 consumers hold items, 2 of them wait for a slot
    run = asyncio.create_task(
        fetch_all(client, items, concurrency=4, timeout=5, on_result=results.append, global_limit=limit, stop=stop)
    )
    await until(target, lambda s: s.in_flight == 2)

    stop.set()
    await asyncio.wait_for(run, timeout=2)

    assert len(results) == 2 and {r.outcome for r in results} == {"succeeded"}  # in flight: finished, recorded
    await asyncio.sleep(0.3)
    assert (await until(target, lambda s: s.in_flight == 0)).requests == 2


async def test_a_failing_callback_stops_the_run_and_raises(target: TargetServer, client: httpx.AsyncClient) -> None:
    def on_result(result: FetchResult) -> None:
        raise KeyError(result.position)

    items = [(0, target.url("/ok"))] + [(i, target.url("/hang")) for i in range(1, 20)]
    with pytest.raises(KeyError) as excinfo:
        await fetch_all(client, items, concurrency=4, timeout=30, on_result=on_result)

    assert excinfo.value.args == (0,)
    await until(target, lambda s: s.in_flight == 0, timeout=1)  # the other fetches were cancelled


async def test_a_failing_iterable_stops_the_run_and_raises(target: TargetServer, client: httpx.AsyncClient) -> None:
    async def broken() -> AsyncIterator[tuple[int, str]]:
        yield 0, target.url("/hang")
        await until(target, lambda s: s.in_flight == 1)
        raise ConnectionError("database went away")

    with pytest.raises(ConnectionError, match="database went away"):
        await fetch_all(client, broken(), concurrency=2, timeout=30, on_result=lambda r: None)
    await until(target, lambda s: s.in_flight == 0, timeout=1)


async def test_concurrency_must_be_positive(client: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        await fetch_all(client, [], concurrency=0, timeout=1, on_result=lambda r: None)
