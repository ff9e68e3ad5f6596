"""Requests with a method, headers and a body through the fetch engine, against a loopback echo target.

What the target received is what is asserted: the method, the headers, the body
and how many times, across redirects (to the same origin and to a second port)
and retries.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from jobs.engine.fetch import fetch_one
from jobs.engine.pipeline import fetch_all
from jobs.engine.requestspec import RequestSpec
from jobs.engine.values import FetchOptions
from tests.echo import EchoServer

TOKEN = "Bearer s3cr3t-t0ken"


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


@pytest.fixture
def other() -> Iterator[EchoServer]:
    """A second loopback origin (another port)."""
    with EchoServer() as server:
        yield server


def post(body: bytes = b'{"n":1}', extra: tuple[tuple[str, str], ...] = ()) -> RequestSpec:
    pairs = (("Authorization", TOKEN), ("Content-Type", "application/json"), *extra)
    return RequestSpec(method="POST", headers=pairs, body=body)


async def test_a_post_sends_its_method_headers_and_body_once(echo: EchoServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, echo.url("/echo/a"), request=post(extra=(("X-Trace", "t1"),)))
    assert result.outcome == "succeeded", result.error
    [seen] = echo.seen()
    assert (seen.method, seen.body) == ("POST", b'{"n":1}')
    assert seen.header("Authorization") == TOKEN
    assert seen.header("Content-Type") == "application/json"
    assert seen.header("Content-Length") == "7"
    assert seen.header("X-Trace") == "t1"
    assert seen.header("User-Agent") == "batchfetch/1.0"


async def test_a_header_replaces_the_clients_own(echo: EchoServer, client: httpx.AsyncClient) -> None:
    spec = RequestSpec(headers=(("User-Agent", "probe/2"),))
    await fetch_one(client, 0, echo.url("/echo/ua"), request=spec)
    [seen] = echo.seen()
    assert [v for k, v in seen.headers if k.lower() == "user-agent"] == ["probe/2"]


async def test_a_plain_get_is_unchanged(echo: EchoServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, echo.url("/echo/plain"))
    assert result.outcome == "succeeded"
    [seen] = echo.seen()
    assert (seen.method, seen.body, seen.header("Content-Length")) == ("GET", b"", None)


@pytest.mark.parametrize("code", [301, 302, 303])
async def test_a_post_redirected_by_301_302_303_becomes_a_get_without_body(
    code: int, echo: EchoServer, client: httpx.AsyncClient
) -> None:
    start = echo.url(f"/redirect/{code}?to=" + quote("/echo/after", safe=""))
    result = await fetch_one(client, 0, start, request=post())
    assert result.outcome == "succeeded", result.error
    first, second = echo.seen()
    assert (first.method, first.body) == ("POST", b'{"n":1}')
    assert (second.method, second.body) == ("GET", b"")
    assert second.header("Content-Type") is None and second.header("Content-Length") is None
    assert second.header("Authorization") == TOKEN  # same origin: kept


@pytest.mark.parametrize("code", [307, 308])
async def test_a_post_redirected_by_307_308_keeps_method_and_body(
    code: int, echo: EchoServer, client: httpx.AsyncClient
) -> None:
    start = echo.url(f"/redirect/{code}?to=" + quote("/echo/after", safe=""))
    result = await fetch_one(client, 0, start, request=post())
    assert result.outcome == "succeeded", result.error
    first, second = echo.seen()
    assert [(s.method, s.body) for s in (first, second)] == [("POST", b'{"n":1}')] * 2
    assert second.header("Content-Type") == "application/json"


async def test_a_redirect_to_another_port_drops_the_secret_headers(
    echo: EchoServer, other: EchoServer, client: httpx.AsyncClient
) -> None:
    spec = RequestSpec(
        headers=(("Authorization", TOKEN), ("X-Api-Key", "k"), ("Cookie", "c=1"), ("X-Mine", "m"), ("Accept", "a/b")),
        secret=RequestSpec().secret | {"x-mine"},
    )
    start = echo.url("/redirect/302?to=" + quote(other.url("/echo/there"), safe=""))
    result = await fetch_one(client, 0, start, request=spec)
    assert result.outcome == "succeeded", result.error
    assert result.final_url == other.url("/echo/there")
    [first], [second] = echo.seen(), other.seen()
    assert first.header("Authorization") == TOKEN
    for name in ("Authorization", "X-Api-Key", "Cookie", "X-Mine"):
        assert second.header(name) is None, name
    assert second.header("Accept") == "a/b"


async def test_secret_headers_stay_dropped_when_a_redirect_comes_back(
    echo: EchoServer, other: EchoServer, client: httpx.AsyncClient
) -> None:
    back = other.url("/redirect/307?to=" + quote(echo.url("/echo/back"), safe=""))
    start = echo.url("/redirect/307?to=" + quote(back, safe=""))
    await fetch_one(client, 0, start, request=post())
    assert [s.header("Authorization") for s in echo.seen()] == [TOKEN, None]
    assert [s.body for s in echo.seen()] == [b'{"n":1}'] * 2


async def test_a_post_answered_503_is_not_retried_by_default(echo: EchoServer, client: httpx.AsyncClient) -> None:
    options = FetchOptions(retries=2, backoff_base=0.0)
    result = await fetch_one(client, 0, echo.url("/status/503"), options=options, request=post())
    assert (result.outcome, result.attempts, len(echo.seen())) == ("failed", 1, 1)
    assert "not retried" in result.error and "retry_unsafe" in result.error


async def test_a_post_answered_503_is_retried_with_retry_unsafe(echo: EchoServer, client: httpx.AsyncClient) -> None:
    options = FetchOptions(retries=2, backoff_base=0.0, retry_unsafe=True)
    result = await fetch_one(client, 0, echo.url("/status/503"), options=options, request=post())
    assert (result.outcome, result.attempts) == ("failed", 3)
    assert [s.body for s in echo.seen()] == [b'{"n":1}'] * 3


async def test_idempotent_methods_are_retried(echo: EchoServer, client: httpx.AsyncClient) -> None:
    options = FetchOptions(retries=1, backoff_base=0.0)
    spec = RequestSpec(method="PUT", body=b"x")
    result = await fetch_one(client, 0, echo.url("/status/503"), options=options, request=spec)
    assert result.attempts == 2 and len(echo.seen()) == 2


async def test_head_records_the_headers_and_no_body(echo: EchoServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, echo.url("/echo/h"), request=RequestSpec(method="HEAD"))
    assert result.outcome == "succeeded", result.error
    assert (result.status_code, result.content_type) == (200, "application/json; charset=utf-8")
    assert (result.bytes, result.sha256) == (0, "")
    assert echo.seen()[0].method == "HEAD"


async def test_fetch_all_takes_a_request_per_item_and_a_default(echo: EchoServer, client: httpx.AsyncClient) -> None:
    results = []
    default = RequestSpec(method="DELETE")
    items = [(0, echo.url("/echo/0"), None), (1, echo.url("/echo/1"), post(b"[1]")), (2, echo.url("/echo/2"))]
    await fetch_all(
        client, items, concurrency=2, options=FetchOptions(request=default), on_result=results.append
    )
    assert all(r.outcome == "succeeded" for r in results)
    by_path = {s.path: s for s in echo.seen()}
    assert by_path["/echo/0"].method == "DELETE" and by_path["/echo/2"].method == "DELETE"
    assert (by_path["/echo/1"].method, by_path["/echo/1"].body) == ("POST", b"[1]")


async def test_post_redirect_get_to_the_same_url_is_not_a_loop(echo: EchoServer, client: httpx.AsyncClient) -> None:
    result = await fetch_one(client, 0, echo.url("/prg"), request=post())
    assert (result.outcome, result.redirects) == ("succeeded", 1), result.error
    assert [(s.method, s.path) for s in echo.seen()] == [("POST", "/prg"), ("GET", "/prg")]
