"""A lean httpx transport on aiohttp, for the fetch engine.

The worker keeps `httpx.AsyncClient` as its API, but its transport is the hot
path: every URL goes through it once. Compared with `httpx_aiohttp`'s
`AiohttpTransport` (which it replaces in `client.make_client`), it does only
what a GET of many URLs needs and skips per-request allocations: the URL goes
to aiohttp already parsed (`yarl.URL(..., encoded=True)`, no second parse or
re-quoting), headers go as a plain list of pairs, `ClientTimeout`s are cached
per distinct timeout, and the body is read with `readany()` (the chunks as
they arrive, no re-chunking). No proxies, no Unix sockets, no HTTP/2 (aiohttp
speaks HTTP/1.1 only).

aiohttp errors become the httpx exceptions of the same meaning, chained
(`raise ... from exc`), so `errors._describe` classifies them by their cause
as before.
"""

from __future__ import annotations

import ssl

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver
from aiohttp.streams import EofStream
from yarl import URL

# aiohttp exception -> httpx exception; the first match wins, so subclasses come first.
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # includes DNS and TLS certificate errors
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientConnectionError, httpx.ReadError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (aiohttp.ClientError, httpx.TransportError),
)


def _translate(exc: Exception) -> httpx.TransportError | None:
    for source, target in _ERRORS:
        if isinstance(exc, source):
            return target(str(exc) or type(exc).__name__)
    return None


class _Body(httpx.AsyncByteStream):
    """The response body, as aiohttp receives it; its own iterator (no generator layers: one step per chunk)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._content = response.content

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._content.readany()
        except EofStream:
            raise StopAsyncIteration from None
        except aiohttp.ClientError as exc:
            raise (_translate(exc) or httpx.ReadError(str(exc))) from exc
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        # release() returns a fully read connection to the pool; an unread one is closed.
        self._response.release()


class LeanAiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp `ClientSession` (created on first use, on the running loop) behind httpx."""

    def __init__(
        self,
        *,
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._max_connections = max_connections
        self._ssl_context = ssl_context or httpx.create_ssl_context(trust_env=False)
        self._resolver = resolver
        """Resolves host names for the connector (the SSRF guard's `GuardedResolver`); None: aiohttp's default."""
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, float | None, float | None], aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=0, ssl=self._ssl_context, resolver=self._resolver
        )
        self._session = aiohttp.ClientSession(
            connector=connector, trust_env=False, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )
        return self._session

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        spec = request.extensions.get("timeout") or {}
        key = (spec.get("connect"), spec.get("read"), spec.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(sock_connect=key[0], sock_read=key[1], connect=key[2])
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        try:
            content: bytes | None = request.content or None
        except httpx.RequestNotRead:
            raise httpx.UnsupportedProtocol("streaming request bodies are not supported by this transport") from None
        try:
            url = URL(str(request.url), encoded=True)
            url.port  # noqa: B018 - yarl checks the port lazily; aiohttp would raise ValueError later
        except ValueError as exc:
            raise httpx.InvalidURL(str(exc)) from exc
        try:
            response = await session.request(
                request.method,
                url,
                headers=request.headers.multi_items(),
                data=content,
                allow_redirects=False,
                compress=None,
                timeout=self._timeout(request),
                server_hostname=request.extensions.get("sni_hostname"),
            )
        except aiohttp.ClientError as exc:
            translated = _translate(exc)
            if translated is None:
                raise
            raise translated from exc
        extensions = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
