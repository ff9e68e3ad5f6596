"""The worker's one shared HTTP client: `FetchClient` (no cookie jar, a short path for plain requests).

`make_client` builds it on `LeanAiohttpTransport`, with the SSRF guard's
resolver when given a `Guard`. `_Timed` sets `response.elapsed` as httpx's own
client does, without a reference cycle per request.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx

from jobs.engine.netguard import GuardedResolver
from jobs.engine.transport import LeanAiohttpTransport
from jobs.engine.values import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from aiohttp.abc import AbstractResolver
    from httpx._client import UseClientDefault  # httpx exports only its instance, USE_CLIENT_DEFAULT

    from jobs.engine.netguard import Guard

USER_AGENT = "batchfetch/1.0"
"""Sent with every request; robots.txt rules for `batchfetch` apply to it."""


class _NoCookies(httpx.Cookies):
    """A cookie jar that stays empty: responses never set cookies, requests never send any."""

    def extract_cookies(self, response: httpx.Response) -> None:
        pass


class FetchClient(httpx.AsyncClient):
    """An `httpx.AsyncClient` without a cookie jar, with a shorter path for plain requests.

    One client serves every job of a worker, so a jar would send cookies one
    user's target set to another user's URLs. Skipping it also saves ~8% of
    the worker's CPU per URL (httpx builds a urllib request per response to
    look for Set-Cookie, even when there is none).

    The engine sends every request with `build_request` and `send`; for the
    plain case (an absolute URL, a method without a body, no per-request
    headers, params, body, auth, redirects, event hooks or mounts) both skip
    httpx's merging and its auth/redirect/hook generators (with the engine's
    flat slot handling: 0.30 -> 0.235 ms of CPU per URL, bench/results.md).
    Anything else takes httpx's path.
    """

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        mounts: Mapping[str, httpx.AsyncBaseTransport | None] | None = None,
        default_encoding: str | Callable[[bytes], str] = "utf-8",
        **kwargs: Any,
    ) -> None:
        super().__init__(transport=transport, mounts=mounts, default_encoding=default_encoding, **kwargs)
        # An explicit transport without mounts or proxy serves every URL (httpx reads proxies from the
        # environment only when it creates the transport itself).
        self._direct = transport if transport is not None and not mounts and kwargs.get("proxy") is None else None
        self._encoding = default_encoding
        self._timeouts: dict[tuple[float | None, ...], dict[str, float | None]] = {}

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        if cookies:
            raise ValueError("the fetch client keeps no cookies")

    def build_request(  # type: ignore[override]  # same signature, spelled with **kwargs
        self,
        method: str,
        url: httpx.URL | str,
        *,
        timeout: httpx.Timeout | UseClientDefault | float | None = httpx.USE_CLIENT_DEFAULT,
        **kwargs: Any,
    ) -> httpx.Request:
        if kwargs and any(value is not None for value in kwargs.values()):
            return super().build_request(method, url, timeout=timeout, **kwargs)
        url = url if isinstance(url, httpx.URL) else httpx.URL(url)
        defaults = self.headers
        # httpx adds Content-Length: 0 to these, and no Host when the client's headers have one.
        if url.is_relative_url or self.params or method.upper() in ("POST", "PUT", "PATCH") or "host" in defaults:
            return super().build_request(method, url, timeout=timeout)
        # What httpx builds for a body-less request: Host first, then the client's headers, an empty body.
        # The encoding is known (the netloc is ASCII; the client's headers cached theirs), so the transport's
        # reading of the headers does not probe every one of them again.
        headers = httpx.Headers([(b"Host", url.netloc), *defaults.raw], encoding=defaults.encoding)
        extensions = {"timeout": self._timeout_dict(self.timeout if timeout is httpx.USE_CLIENT_DEFAULT else timeout)}
        request = httpx.Request(method, url, headers=headers, stream=httpx.ByteStream(b""), extensions=extensions)
        request.read()
        return request

    def _timeout_dict(self, timeout: httpx.Timeout | float | None) -> dict[str, float | None]:
        spec = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        key = (spec.connect, spec.read, spec.write, spec.pool)
        found = self._timeouts.get(key)
        if found is None:
            found = self._timeouts[key] = spec.as_dict()
        return found

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: httpx.Auth | UseClientDefault | None = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        transport = self._direct
        hooks = self.event_hooks
        if (
            transport is None
            or self.is_closed
            or (self.auth if auth is httpx.USE_CLIENT_DEFAULT else auth) is not None
            or request.url.userinfo  # httpx turns it into basic auth
            or not isinstance(request.stream, httpx.AsyncByteStream)  # httpx refuses a sync-only body
            or (self.follow_redirects if follow_redirects is httpx.USE_CLIENT_DEFAULT else follow_redirects)
            or hooks["request"]
            or hooks["response"]
        ):
            return await super().send(request, stream=stream, auth=auth, follow_redirects=follow_redirects)
        if "timeout" not in request.extensions:
            request.extensions["timeout"] = self._timeout_dict(self.timeout)
        started = time.perf_counter()
        try:
            response = await transport.handle_async_request(request)
        except httpx.RequestError as exc:
            exc.request = request
            raise
        response.request = request
        response.stream = _Timed(response.stream, response, started)  # type: ignore[arg-type]
        response.default_encoding = self._encoding
        if _httpx_logger.isEnabledFor(logging.INFO):
            _httpx_logger.info(
                'HTTP Request: %s %s "%s %d %s"', request.method, request.url, response.http_version,
                response.status_code, response.reason_phrase,
            )  # fmt: skip
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response


class _Timed(httpx.AsyncByteStream):
    """A response body that sets `response.elapsed` when closed, as httpx's client does.

    It refers to its response weakly: the response refers to it (its `stream`), and a
    reference cycle per request would leave every response, its headers and its request to
    the cyclic garbage collector (measured: ~13 objects per URL, 12-16% of the engine's CPU).
    """

    def __init__(self, stream: httpx.AsyncByteStream, response: httpx.Response, started: float) -> None:
        self._stream = stream
        self._response = weakref.ref(response)
        self._started = started

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()  # no generator of our own around it: one less step per chunk

    async def aclose(self) -> None:
        response = self._response()
        if response is not None:
            response.elapsed = timedelta(seconds=time.perf_counter() - self._started)
        await self._stream.aclose()


_httpx_logger = logging.getLogger("httpx")
_NO_COOKIES = _NoCookies()


def make_client(
    *, max_connections: int = 100, guard: Guard | None = None, resolver: AbstractResolver | None = None
) -> httpx.AsyncClient:
    """Create the worker's one shared client; close it with `await client.aclose()` (or `async with`).

    The aiohttp transport opens at most `max_connections` connections in all
    (aiohttp's `limit`; no lower per-host limit), so set it to at least the
    worker's global concurrency limit. With a `guard`, the connector resolves
    host names through `GuardedResolver`: it connects only to addresses the
    guard has checked (`resolver` replaces the system resolver under the guard:
    tests). Proxies from the environment are ignored (`trust_env=False`).
    """
    # The transport creates its aiohttp session lazily, on the running loop, with
    # TCPConnector(limit=max_connections, limit_per_host=0) and trust_env=False.
    # LeanAiohttpTransport measured ~10% less CPU per URL than httpx_aiohttp's (bench/results.md).
    transport = LeanAiohttpTransport(
        max_connections=max_connections, resolver=GuardedResolver(guard, resolver) if guard is not None else resolver
    )
    return FetchClient(
        transport=transport, timeout=httpx.Timeout(DEFAULT_TIMEOUT), follow_redirects=False, trust_env=False,
        headers={"User-Agent": USER_AGENT},
    )
