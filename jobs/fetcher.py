"""The fetch engine: GET many URLs concurrently, one outcome value per URL.

No Django here: the worker injects a shared `httpx.AsyncClient` (see
`make_client`) and stores the `FetchResult`s it gets back. Errors never escape
`fetch_one`; they become the `error` string of a failed result, decided in one
place (`_describe`). Only cancellation propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass

import aiohttp
import httpx

from .transport import LeanAiohttpTransport

# Backstop for requests made with the client outside fetch_one (fetch_one passes its own deadline).
DEFAULT_TIMEOUT = 30.0

# Substrings of getaddrinfo() errors, for transports that report a failed lookup as a plain ConnectError.
_DNS_MESSAGES = ("name or service not known", "nodename nor servname", "name resolution", "getaddrinfo failed")
# Exception types per error class; `_describe` tries them in order (DNS before TLS before timeout ...).
_TLS = (aiohttp.ClientSSLError, ssl.SSLError)
_TIMEOUT = (TimeoutError, httpx.TimeoutException)  # aiohttp's timeout errors are TimeoutErrors too
_CONNECT = (aiohttp.ClientConnectorError, httpx.ConnectError)
_INVALID_URL = (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError, httpx.InvalidURL, httpx.UnsupportedProtocol)
# After connecting: the connection broke, or the server did not speak valid HTTP.
_PROTOCOL = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    aiohttp.ClientResponseError,
    httpx.ProtocolError,
    httpx.NetworkError,
    httpx.DecodingError,
)


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The outcome of fetching one URL."""

    position: int
    """0-based index of the URL in its job."""
    url: str
    outcome: str
    """"succeeded" (an HTTP response with status < 400) or "failed" (anything else)."""
    status_code: int | None
    """The response status, if one arrived (also on failures after the headers, e.g. a reset body)."""
    bytes: int
    """Body bytes received, as sent on the wire (before content decoding); bodies are not kept."""
    elapsed_ms: int
    """Wall time of the whole fetch."""
    attempts: int
    """Requests made for this URL: always 1 for now."""
    error: str
    """"" on success, else "<class>: <message>" with class in
    timeout | connect | dns | tls | http_status | invalid_url | protocol | other."""


class _NoCookies(httpx.Cookies):
    """A cookie jar that stays empty: responses never set cookies, requests never send any."""

    def extract_cookies(self, response: httpx.Response) -> None:
        pass


class FetchClient(httpx.AsyncClient):
    """An `httpx.AsyncClient` without a cookie jar.

    One client serves every job of a worker, so a jar would send cookies one
    user's target set to another user's URLs. Skipping it also saves ~8% of
    the worker's CPU per URL (httpx builds a urllib request per response to
    look for Set-Cookie, even when there is none).
    """

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        if cookies:
            raise ValueError("the fetch client keeps no cookies")


_NO_COOKIES = _NoCookies()


def make_client(*, max_connections: int = 100) -> httpx.AsyncClient:
    """Create the worker's one shared client; close it with `await client.aclose()` (or `async with`).

    The aiohttp transport opens at most `max_connections` connections in all
    (aiohttp's `limit`; no lower per-host limit), so set it to at least the
    worker's global concurrency limit, or fetches wait for a connection, and
    that waiting counts against their deadline.
    """
    # The transport creates its aiohttp session lazily, on the running loop, with
    # TCPConnector(limit=max_connections, limit_per_host=0) and trust_env=False.
    # LeanAiohttpTransport measured ~10% less CPU per URL than httpx_aiohttp's (bench/results.md).
    transport = LeanAiohttpTransport(max_connections=max_connections)
    return FetchClient(
        transport=transport, timeout=httpx.Timeout(DEFAULT_TIMEOUT), follow_redirects=False, trust_env=False
    )


async def fetch_one(client: httpx.AsyncClient, position: int, url: str, *, timeout: float) -> FetchResult:
    """GET `url`, read and count its body, all within `timeout` seconds.

    Never raises, except CancelledError: every failure becomes a "failed" result.
    """
    started = time.monotonic()
    response: httpx.Response | None = None
    try:
        # httpx's read timeout restarts with every chunk; this deadline covers the whole fetch.
        async with asyncio.timeout(timeout):
            # Passing the deadline to httpx too keeps no single phase (pool, connect, read) longer than the whole.
            async with client.stream("GET", url, timeout=timeout) as response:
                async for _ in response.aiter_raw():
                    pass
    except Exception as exc:  # not CancelledError: that is a BaseException and propagates
        error = _describe(exc, timeout)
    else:
        code = response.status_code
        error = f"http_status: {code} {response.reason_phrase}".rstrip() if code >= 400 else ""
    return FetchResult(
        position=position,
        url=url,
        outcome="failed" if error else "succeeded",
        status_code=response.status_code if response is not None else None,
        bytes=response.num_bytes_downloaded if response is not None else 0,
        elapsed_ms=round((time.monotonic() - started) * 1000),
        attempts=1,
        error=error,
    )


def _describe(exc: Exception, timeout: float) -> str:
    """The "<class>: <message>" error of a fetch that raised `exc`."""
    # httpx_aiohttp turns every aiohttp connection error (refused, DNS, TLS) into
    # httpx.ConnectTimeout, so when aiohttp is the cause, judge by the cause.
    cause = exc.__cause__ if isinstance(exc.__cause__, aiohttp.ClientError) else exc
    message = " ".join(str(cause).split()) or type(cause).__name__
    if isinstance(cause, aiohttp.ClientConnectorDNSError) or (
        isinstance(cause, httpx.ConnectError) and any(m in message.lower() for m in _DNS_MESSAGES)
    ):
        return f"dns: {message}"
    if isinstance(cause, _TLS):
        return f"tls: {message}"
    if isinstance(cause, _TIMEOUT):
        return f"timeout: no complete response within {timeout:g} s"
    if isinstance(cause, _CONNECT):
        return f"connect: {message}"
    if isinstance(cause, _INVALID_URL):
        return f"invalid_url: not an absolute http(s) URL ({message})"
    if isinstance(cause, _PROTOCOL):
        return f"protocol: {message}"
    return f"other: {type(cause).__name__}: {message}"


async def fetch_all(
    client: httpx.AsyncClient,
    items: Iterable[tuple[int, str]] | AsyncIterable[tuple[int, str]],
    *,
    concurrency: int,
    timeout: float,
    on_result: Callable[[FetchResult], None],
    global_limit: asyncio.Semaphore | None = None,
) -> None:
    """Fetch every (position, url) of `items`, at most `concurrency` at a time; call `on_result` for each.

    One producer feeds a bounded queue from `items` (sync, or async so callers
    can stream pages from the database; fetch_all does not close it), and
    `concurrency` consumers fetch from it. `global_limit` (shared by all jobs of
    a worker) is held only while a request is in flight. `on_result` runs on the
    loop, so it must be cheap; if it or `items` raises, the run stops and that
    error is raised. Cancelling fetch_all cancels every fetch, then re-raises.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue(maxsize=concurrency)
    limit: contextlib.AbstractAsyncContextManager[object] = (
        global_limit if global_limit is not None else contextlib.nullcontext()
    )

    async def produce() -> None:
        if isinstance(items, AsyncIterable):
            async for item in items:
                await queue.put(item)
        else:
            for item in items:
                await queue.put(item)
        for _ in range(concurrency):
            await queue.put(None)  # one stop mark per consumer

    async def consume() -> None:
        while (item := await queue.get()) is not None:
            async with limit:
                result = await fetch_one(client, *item, timeout=timeout)
            on_result(result)

    try:
        # The task group cancels the other tasks when one fails or when fetch_all itself is cancelled.
        async with asyncio.TaskGroup() as group:
            group.create_task(produce())
            for _ in range(concurrency):
                group.create_task(consume())
    except ExceptionGroup as errors:
        # Callers want the error itself (e.g. for Job.error), not the group around it.
        failure: BaseException = errors.exceptions[0] if len(errors.exceptions) == 1 else errors
    else:
        return
    raise failure  # outside the except block, so the group is not chained to it
