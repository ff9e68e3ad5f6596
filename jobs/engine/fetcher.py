"""The fetch engine: GET many URLs concurrently, one outcome value per URL.

No Django here: the worker injects a shared `httpx.AsyncClient` (see
`make_client`), the job's `FetchOptions`, and the worker-wide limits (a
semaphore and a `HostSlots` registry), and stores the `FetchResult`s it gets
back. Errors never escape `fetch_one`; they become the `error_class` and
`error` of a failed result, decided in one place (`_describe`). Only
cancellation propagates.

One URL is fetched in *attempts*. An attempt follows redirects by hand (each
hop passes the SSRF guard again) under one deadline, `options.timeout`, and
streams the body through a decoder that stops at `options.max_bytes` decoded
bytes. A failed attempt is retried (connect errors, timeouts, the statuses in
`options.retry_statuses`) after an exponential backoff with full jitter, or
the server's Retry-After; while it waits it holds no slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import hashlib
import logging
import random
import ssl
import time
import weakref
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver

from jobs.engine.decoding import Decoder
from jobs.engine.hostslots import HostSlots
from jobs.engine.netguard import Blocked, Guard, GuardedResolver
from jobs.engine.transport import LeanAiohttpTransport

if TYPE_CHECKING:
    from httpx._client import UseClientDefault  # httpx exports only its instance, USE_CLIENT_DEFAULT

# Backstop for requests made with the client outside fetch_one (fetch_one passes its own deadline).
DEFAULT_TIMEOUT = 30.0
MIB = 1024 * 1024
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Decoded output is produced in pieces of at most this size, so a compression bomb never inflates in memory.
USER_AGENT = "batchfetch/1.0"
"""Sent with every request; robots.txt rules for `batchfetch` apply to it."""
MAX_REASONS = 10
"""Failed attempts described in `error` at most (the count is always right)."""

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
    zlib.error,
)
RETRYABLE_CLASSES = frozenset({"connect", "timeout"})


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """How to fetch the URLs of one job."""

    timeout: float = DEFAULT_TIMEOUT
    """Deadline of one attempt in seconds: every redirect hop and the whole body (httpx's own timeouts reset)."""
    retries: int = 0
    """Further attempts after a retryable failure."""
    retry_statuses: frozenset[int] = RETRY_STATUSES
    """Statuses that are retried (connect errors and timeouts always are)."""
    backoff_base: float = 0.5
    """Backoff before retry n is uniform(0, min(backoff_cap, backoff_base * 2**n)) seconds ("full jitter")."""
    backoff_cap: float = 30.0
    retry_after_cap: float = 60.0
    """A Retry-After longer than this is not waited for: the URL fails instead."""
    max_redirects: int = 10
    max_bytes: int = 10 * MIB
    """Largest body, counted after content decoding; more fails as `too_large`."""
    per_host: int = 8
    """Requests in flight to one host at most (within a `HostSlots` registry, i.e. a worker)."""
    host_delay: float = 0.0
    """Seconds between the starts of two requests to one host."""
    respect_robots: bool = False
    """Consult each origin's robots.txt (fetched once per `fetch_all`) and skip what it disallows."""


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The outcome of fetching one URL."""

    position: int
    """0-based index of the URL in its job."""
    url: str
    outcome: str
    """"succeeded" (an HTTP response with status < 400) or "failed" (anything else)."""
    status_code: int | None
    """The last response's status, if one arrived (also on failures after the headers, e.g. a reset body)."""
    bytes: int
    """Body bytes after content decoding (what `sha256` covers), up to the cap."""
    elapsed_ms: int
    """Wall time of the whole fetch, retries included."""
    attempts: int
    """Attempts made (0 when the URL was refused before any request)."""
    error: str
    """"" on a first-time success; else "<class>: <message>" of the last failure, followed by
    "(attempt n: ...)" for each earlier failed attempt. A success after retries keeps those."""
    error_class: str = ""
    """"" on success, else timeout | connect | dns | tls | too_large | too_many_redirects | blocked |
    http_status | invalid_url | robots | protocol | other."""
    final_url: str = ""
    """The URL of the last response, after redirects."""
    content_type: str = ""
    sha256: str = ""
    """Hex digest of the complete decoded body ("" unless the body was read to the end)."""
    redirects: int = 0
    """Redirect hops followed in the last attempt."""
    body_path: str = ""
    """Where the body was stored, if the caller keeps bodies (set by the caller's sink)."""


class BodySink:
    """Receives a body as it streams; the worker's implementation stores it. Base class: keeps nothing."""

    def write(self, chunk: bytes) -> None:
        """Called on the loop with each decoded piece (at most 64 KiB): must be quick."""

    async def finish(self) -> str:
        """The body was read completely; store it and return where ("" if nowhere)."""
        return ""

    def discard(self) -> None:
        """The body is incomplete or unwanted; drop what was written."""


# --- limits shared by all jobs of a worker -----------------------------------------------------------


class Limit(Protocol):
    """What a job's limit needs: an asyncio.Semaphore, or a ShareLimit (its size changes)."""

    async def acquire(self) -> Any: ...

    def release(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Slots:
    """The caps a request runs under: the job's, the host's and the worker's."""

    job: Limit
    worker: asyncio.Semaphore | None = None
    hosts: HostSlots | None = None
    stop: asyncio.Event | None = None
    """Once set, no request starts: `hold` raises `Stopped` instead of yielding."""

    @contextlib.asynccontextmanager
    async def hold(self, url: httpx.URL, options: FetchOptions) -> AsyncIterator[None]:
        """Hold the slots for one request to `url` (see `acquire`)."""
        await self.acquire(url.host, options)
        try:
            yield
        finally:
            self.release(url.host)

    async def acquire(self, host: str, options: FetchOptions) -> None:
        """Job slot, then host slot (and pacing), then worker slot: the scarcest, worker-wide one is taken last,
        so it is never held while waiting for a busy host. Pair every return with `release(host)`.

        Plain acquire/release rather than nested context managers: this runs for every request.
        """
        await self.job.acquire()
        try:
            if self.hosts is not None:
                await self.hosts.acquire(host, limit=options.per_host, delay=options.host_delay)
            try:
                if self.worker is not None:
                    await self.worker.acquire()
                if self.stop is not None and self.stop.is_set():
                    # Checked last: the stop may have come while we waited for a slot.
                    if self.worker is not None:
                        self.worker.release()
                    raise Stopped
            except BaseException:
                if self.hosts is not None:
                    self.hosts.release(host)
                raise
        except BaseException:
            self.job.release()
            raise

    def release(self, host: str) -> None:
        if self.worker is not None:
            self.worker.release()
        if self.hosts is not None:
            self.hosts.release(host)
        self.job.release()


class Stopped(Exception):
    """The run was stopped before this request could start (see `fetch_all`'s `stop`)."""


# --- the client -----------------------------------------------------------------------------------------

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


# --- one URL ----------------------------------------------------------------------------------------------


class _Failure(Exception):
    """An attempt ended without a usable response: `error_class` and message."""

    def __init__(self, error_class: str, message: str, *, retryable: bool = False, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.retryable = retryable or error_class in RETRYABLE_CLASSES
        self.retry_after = retry_after
        """Seconds the server asked us to wait (Retry-After), 0 if it did not say."""


@dataclass(slots=True)
class _Attempt:
    """What one attempt saw (filled in as it goes, so a failure still reports the status and URL)."""

    url: str
    status_code: int | None = None
    content_type: str = ""
    bytes: int = 0
    sha256: str = ""
    redirects: int = 0
    body_path: str = ""


async def fetch_one(
    client: httpx.AsyncClient,
    position: int,
    url: str,
    *,
    timeout: float | None = None,
    options: FetchOptions | None = None,
    guard: Guard | None = None,
    slots: Slots | None = None,
    sink: Callable[[], BodySink] | None = None,
) -> FetchResult:
    """GET `url` with redirects, retries and limits per `options` (`timeout` overrides `options.timeout`).

    Never raises, except CancelledError: every failure becomes a "failed" result.
    """
    options = options or FetchOptions()
    if timeout is not None:
        options = replace(options, timeout=timeout)
    slots = slots or Slots(job=asyncio.Semaphore(1))
    started = time.monotonic()
    reasons: list[str] = []
    attempt = _Attempt(url)
    failure: _Failure | None = None
    for number in range(1, options.retries + 2):
        attempt = _Attempt(url)
        try:
            await _attempt(client, attempt, options, guard, slots, sink)
        except _Failure as exc:
            failure = exc
        except Stopped:
            raise
        except Exception as exc:  # not CancelledError: that is a BaseException and propagates
            failure = _Failure(*_describe(exc, options.timeout))
        else:
            failure = None
            break
        delay = _retry_delay(failure, number, options)
        if delay is None:
            break
        reasons.append(f"attempt {number}: {failure.error_class}: {failure.message}")
        await asyncio.sleep(delay)  # outside every slot: a waiting retry holds none
    return _result(position, url, attempt, failure, reasons, attempts=number, started=started)


def _result(
    position: int, url: str, attempt: _Attempt, failure: _Failure | None, reasons: list[str], *, attempts: int,
    started: float,
) -> FetchResult:
    error = f"{failure.error_class}: {failure.message}" if failure else ""
    if reasons:
        shown = reasons[:MAX_REASONS] + ([f"{len(reasons) - MAX_REASONS} more"] if len(reasons) > MAX_REASONS else [])
        error = "; ".join(filter(None, [error, *[f"({r})" for r in shown]]))
    blocked_early = failure is not None and failure.error_class in ("blocked", "robots") and attempt.status_code is None
    return FetchResult(
        position=position,
        url=url,
        outcome="failed" if failure else "succeeded",
        status_code=attempt.status_code,
        bytes=attempt.bytes,
        elapsed_ms=round((time.monotonic() - started) * 1000),
        attempts=0 if blocked_early and attempts == 1 else attempts,
        error=error,
        error_class=failure.error_class if failure else "",
        final_url=attempt.url,
        content_type=attempt.content_type,
        sha256=attempt.sha256,
        redirects=attempt.redirects,
        body_path=attempt.body_path,
    )


def _retry_delay(failure: _Failure, number: int, options: FetchOptions) -> float | None:
    """Seconds to wait before attempt `number + 1`, or None if the failure is final."""
    if number > options.retries:
        return None
    if not failure.retryable:
        return None
    backoff = random.uniform(0, min(options.backoff_cap, options.backoff_base * 2 ** (number - 1)))
    hint = failure.retry_after
    if hint > options.retry_after_cap:
        failure.message += f" (Retry-After {hint:g} s is longer than the cap of {options.retry_after_cap:g} s)"
        return None
    return max(backoff, hint)


@functools.lru_cache(maxsize=64)
def _connect_timeout(seconds: float) -> httpx.Timeout:
    """httpx's timeouts for one request: the attempt's deadline (`asyncio.timeout_at`) bounds the whole; httpx
    bounds only the connect. No read timeout: on aiohttp it re-arms a timer on every chunk received."""
    return httpx.Timeout(None, connect=seconds)


async def _attempt(
    client: httpx.AsyncClient,
    attempt: _Attempt,
    options: FetchOptions,
    guard: Guard | None,
    slots: Slots,
    sink: Callable[[], BodySink] | None,
) -> None:
    """One attempt: follow redirects, read the final body. Raises _Failure or the transport's error."""
    seen = {attempt.url}
    deadline: float | None = None
    while True:
        target = _guarded_url(attempt.url, guard)
        host = target.host
        await slots.acquire(host, options)
        try:
            loop = asyncio.get_running_loop()
            # The deadline starts once the first request may go out: waiting for a slot is not the URL's fault.
            deadline = deadline if deadline is not None else loop.time() + options.timeout
            try:
                async with asyncio.timeout_at(deadline):
                    request = client.build_request("GET", target, timeout=_connect_timeout(options.timeout))
                    response = await client.send(request, stream=True)
                    try:
                        wanted = _headers(response)
                        location = _read_response(response, wanted, attempt)
                        if location is None:
                            await _read_body(response, wanted.get(b"content-encoding", ""), attempt, options, sink)
                            _check_status(response, options)
                            return
                    finally:
                        await response.aclose()
            except TimeoutError as exc:
                raise _Failure("timeout", f"no complete response within {options.timeout:g} s") from exc
        finally:
            slots.release(host)
        if attempt.redirects >= options.max_redirects:
            raise _Failure("too_many_redirects", f"more than {options.max_redirects} redirects")
        if location in seen:
            raise _Failure("too_many_redirects", f"redirect loop back to {location}")
        seen.add(location)
        attempt.url = location
        attempt.redirects += 1


def _guarded_url(url: str, guard: Guard | None) -> httpx.URL:
    """`url` parsed, or _Failure("blocked") if the guard refuses it.

    The guard judges httpx's parse, which is what the transport connects to (no
    second parse per request). A URL httpx cannot parse is judged as written, so
    an odd spelling of an address (0177.0.0.1) is reported as blocked.
    """
    try:
        try:
            target = httpx.URL(url)
        except httpx.InvalidURL:
            if guard is not None:
                guard.check_url(url)
            raise
        if guard is not None:
            guard.check_host(target.scheme, target.host)
    except Blocked as exc:
        raise _Failure("blocked", str(exc)) from exc
    return target


def _read_response(response: httpx.Response, wanted: dict[bytes, str], attempt: _Attempt) -> str | None:
    """Record the status and headers (`wanted`: from `_headers`); return the next URL if this is a redirect."""
    attempt.status_code = response.status_code
    attempt.content_type = wanted.get(b"content-type", "")[:200]
    location = wanted.get(b"location")
    if response.status_code in REDIRECT_STATUSES and location:
        try:
            return str(response.url.join(location.strip()))
        except httpx.InvalidURL as exc:
            raise _Failure("invalid_url", f"bad redirect Location {location[:200]!r} ({exc})") from exc
    return None


_WANTED = frozenset({b"content-type", b"location", b"content-encoding"})


def _headers(response: httpx.Response) -> dict[bytes, str]:
    """The response headers the engine reads, in one pass (a `Headers.get` scans every header each time).

    Repeated headers are joined with ", " as `Headers.get` does."""
    found: dict[bytes, str] = {}
    encoding = response.headers.encoding
    for key, value in response.headers.raw:
        key = key.lower()
        if key in _WANTED:
            text = value.decode(encoding)
            found[key] = f"{found[key]}, {text}" if key in found else text
    return found


def _check_status(response: httpx.Response, options: FetchOptions) -> None:
    """Raise _Failure("http_status") for a status >= 400, retryable if it is one of `retry_statuses`."""
    if response.status_code < 400:
        return
    message = f"{response.status_code} {response.reason_phrase}".rstrip()
    retryable = response.status_code in options.retry_statuses
    retry_after = (parse_retry_after(response.headers.get("retry-after")) or 0.0) if retryable else 0.0
    raise _Failure("http_status", message, retryable=retryable, retry_after=retry_after)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


async def _read_body(
    response: httpx.Response,
    content_encoding: str,
    attempt: _Attempt,
    options: FetchOptions,
    sink: Callable[[], BodySink] | None,
) -> None:
    """Stream, decode, count and hash the body, stopping at `max_bytes`; hand it to the sink if any."""
    digest = hashlib.sha256()
    decoder = Decoder(content_encoding)
    store = sink() if sink is not None else None
    complete = False

    def take(piece: bytes) -> None:
        """Count, cap, hash and keep one decoded piece."""
        attempt.bytes += len(piece)
        if attempt.bytes > options.max_bytes:
            attempt.bytes = options.max_bytes
            raise _Failure("too_large", f"body larger than {options.max_bytes} bytes (after decoding)")
        digest.update(piece)
        if store is not None:
            store.write(piece)

    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise TypeError("the fetch engine needs an async client: the response body is not an async stream")
    try:
        # The stream itself rather than `aiter_raw()`, whose async generator and byte chunker cost
        # more than the rest of this loop on a small body (`_attempt` closes the response on failure).
        async for raw in stream:
            if decoder.active:
                for piece in decoder.decode(raw):
                    take(piece)
            else:
                take(raw)  # identity bodies (most) skip the decoder's generator: this runs for every chunk
        await response.aclose()  # the connection goes back to the pool before the sink stores the body
        for piece in decoder.flush():
            take(piece)
        if store is not None:
            attempt.body_path = await store.finish()
        complete = True
    finally:
        if store is not None and not complete:
            store.discard()
    attempt.sha256 = digest.hexdigest()


def _describe(exc: BaseException, timeout: float) -> tuple[str, str]:
    """The (error class, message) of a fetch that raised `exc`."""
    blocked = _find_cause(exc, Blocked)
    if blocked is not None:
        return "blocked", str(blocked)
    # httpx_aiohttp turns every aiohttp connection error (refused, DNS, TLS) into
    # httpx.ConnectTimeout, so when aiohttp is the cause, judge by the cause.
    cause = exc.__cause__ if isinstance(exc.__cause__, aiohttp.ClientError) else exc
    message = " ".join(str(cause).split()) or type(cause).__name__
    if isinstance(cause, aiohttp.ClientConnectorDNSError) or (
        isinstance(cause, httpx.ConnectError) and any(m in message.lower() for m in _DNS_MESSAGES)
    ):
        return "dns", message
    if isinstance(cause, _TLS):
        return "tls", message
    if isinstance(cause, _TIMEOUT):
        return "timeout", f"no complete response within {timeout:g} s"
    if isinstance(cause, _CONNECT):
        return "connect", message
    if isinstance(cause, _INVALID_URL):
        return "invalid_url", f"not an absolute http(s) URL ({message})"
    if isinstance(cause, _PROTOCOL):
        return "protocol", message
    if isinstance(cause, httpx.HTTPError) and "header" in message.lower():
        return "protocol", message
    return "other", f"{type(cause).__name__}: {message}"


def _find_cause(exc: BaseException, kind: type[Exception]) -> BaseException | None:
    """`exc` or the first exception of its cause/context chain that is a `kind`."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


# --- many URLs -----------------------------------------------------------------------------------------------


async def fetch_all(
    client: httpx.AsyncClient,
    items: Iterable[tuple[int, str]] | AsyncIterable[tuple[int, str]],
    *,
    concurrency: int,
    on_result: Callable[[FetchResult], None],
    timeout: float | None = None,
    options: FetchOptions | None = None,
    global_limit: asyncio.Semaphore | None = None,
    hosts: HostSlots | None = None,
    guard: Guard | None = None,
    sink: Callable[[int], BodySink] | None = None,
    stop: asyncio.Event | None = None,
    job_limit: Limit | None = None,
) -> None:
    """Fetch every (position, url) of `items`, at most `concurrency` at a time; call `on_result` for each.

    One producer feeds a bounded queue from `items` (sync, or async so callers
    can stream pages from the database; fetch_all does not close it), and
    2 × `concurrency` consumers fetch from it: at most `concurrency` requests
    are in flight (a job semaphore), while up to as many more URLs wait for a
    retry holding no slot. `global_limit` (shared by all jobs of a worker, FIFO,
    so a later job's requests queue in turn with an earlier job's) and `hosts`
    (per-host caps, also worker-wide) are held only while a request is in
    flight. `sink(position)` makes a `BodySink` per URL to keep bodies. With
    `options.respect_robots`, URLs that robots.txt disallows become `robots`
    results without a request.
    `on_result` runs on the loop, so it must be cheap; if it or `items` raises,
    the run stops and that error is raised. Cancelling fetch_all cancels every
    fetch, then re-raises. Once `stop` is set no new request starts (not even a
    queued item, a retry or a redirect hop; such URLs get no result) and
    fetch_all returns when the requests in flight have finished. `job_limit`
    replaces the job semaphore (e.g. a `ShareLimit`, whose size changes while
    the job runs; `concurrency` is then its largest size).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    options = options or FetchOptions()
    if timeout is not None:
        options = replace(options, timeout=timeout)
    slots = Slots(job=job_limit or asyncio.Semaphore(concurrency), worker=global_limit, hosts=hosts, stop=stop)
    consumers = concurrency * 2 if options.retries else concurrency
    # Imported here: robots.py builds on this module.
    from jobs.engine.robots import RobotsCache

    robots = RobotsCache(client, options=options, slots=slots, guard=guard) if options.respect_robots else None
    queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue(maxsize=concurrency)

    def stopped() -> bool:
        return stop is not None and stop.is_set()

    async def produce() -> None:
        if isinstance(items, AsyncIterable):
            async for item in items:
                if stopped():
                    break
                await queue.put(item)
        else:
            for item in items:
                if stopped():
                    break
                await queue.put(item)
        for _ in range(consumers):
            await queue.put(None)  # one stop mark per consumer

    async def consume() -> None:
        while (item := await queue.get()) is not None:
            if stopped():
                continue  # drain without fetching, so the producer is never stuck on a full queue
            position, url = item
            try:
                refusal = await robots.refusal(position, url) if robots is not None else None
                if refusal is not None:
                    result = refusal
                else:
                    make_sink = (lambda: sink(position)) if sink is not None else None  # noqa: B023 (used at once)
                    result = await fetch_one(
                        client, position, url, options=options, guard=guard, slots=slots, sink=make_sink
                    )
            except Stopped:
                continue  # the stop came while this URL waited for a slot: it stays without a result
            on_result(result)

    try:
        # The task group cancels the other tasks when one fails or when fetch_all itself is cancelled.
        async with asyncio.TaskGroup() as group:
            group.create_task(produce())
            for _ in range(consumers):
                group.create_task(consume())
    except ExceptionGroup as errors:
        # Callers want the error itself (e.g. for Job.error), not the group around it.
        failure: BaseException = errors.exceptions[0] if len(errors.exceptions) == 1 else errors
    else:
        return
    finally:
        if robots is not None:
            robots.close()
    raise failure  # outside the except block, so the group is not chained to it
