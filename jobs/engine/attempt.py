"""One attempt at a URL: follow redirects by hand, hop by hop, under one deadline.

Each hop passes the SSRF guard and holds the request's slots only while it is
in flight; a redirect (`REDIRECT_STATUSES` with a Location) is followed up to
`max_redirects` times and never back to a URL already seen.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from jobs.engine.errors import _Failure
from jobs.engine.netguard import Blocked
from jobs.engine.response import _Attempt, _check_status, _headers, _read_body, parse_retry_after

if TYPE_CHECKING:
    from jobs.engine.netguard import Guard
    from jobs.engine.requestspec import RequestSpec
    from jobs.engine.slots import Slots
    from jobs.engine.values import BodySink, FetchOptions

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
THROTTLE_STATUSES = frozenset({429, 503})
"""Answers whose Retry-After pauses the host for every worker (and that halve an autothrottle limit)."""
_DEFAULT_PORTS = {"http": 80, "https": 443}


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
    clock: asyncio.Timeout | None = None,
    spec: RequestSpec | None = None,
) -> None:
    """One attempt: follow redirects, read the final body. Raises _Failure or the transport's error.

    `clock`, the URL's deadline (`options.url_deadline`), is armed when the first attempt holds its slots.
    `spec`: the method, headers and body to send (None: a plain GET); it changes as redirects say
    (`RequestSpec.after_redirect`). A HEAD records the headers and reads no body."""
    seen = {attempt.url if spec is None or spec.method == "GET" else f"{spec.method} {attempt.url}"}
    deadline: float | None = None
    while True:
        target = _guarded_url(attempt.url, guard)
        host = host_key(target)
        await slots.acquire(host, options)
        try:
            loop = asyncio.get_running_loop()
            # The deadline starts once the first request may go out: waiting for a slot is not the URL's fault.
            deadline = deadline if deadline is not None else loop.time() + options.timeout
            if attempt.started is None:
                attempt.started = loop.time()
            if clock is not None and clock.when() is None and options.url_deadline is not None:
                clock.reschedule(loop.time() + options.url_deadline)
            try:
                async with asyncio.timeout_at(deadline):
                    if spec is None:
                        request = client.build_request("GET", target, timeout=_connect_timeout(options.timeout))
                    else:
                        request = spec.build(client, target, connect_timeout=options.timeout)
                    sent = loop.time()
                    response = await client.send(request, stream=True)
                    try:
                        _observe(slots, host, response, loop.time() - sent, options)
                        wanted = _headers(response, attempt)
                        location = _read_response(response, wanted, attempt)
                        if location is None:
                            if spec is None or spec.method != "HEAD":
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
        if spec is not None:
            spec = spec.after_redirect(response.status_code, target, httpx.URL(location))
        # A POST redirected (303) to its own URL as a GET is the Post/Redirect/Get pattern, not a loop.
        visit = location if spec is None or spec.method == "GET" else f"{spec.method} {location}"
        if visit in seen:
            raise _Failure("too_many_redirects", f"redirect loop back to {location}")
        seen.add(visit)
        attempt.url = location
        attempt.redirects += 1


def host_key(url: httpx.URL) -> str:
    """What per-host caps count by: host name and port ("example.com:443")."""
    return f"{url.host}:{url.port or _DEFAULT_PORTS.get(url.scheme, 0)}"


def _observe(slots: Slots, host: str, response: httpx.Response, latency: float, options: FetchOptions) -> None:
    """Tell the host's slots what the response said, when it matters: for autothrottle, or a 429/503."""
    status = response.status_code
    if status in THROTTLE_STATUSES:
        retry_after = min(parse_retry_after(response.headers.get("retry-after")) or 0.0, options.retry_after_cap)
        slots.observe(host, status, latency, retry_after, options)
    elif options.autothrottle:
        slots.observe(host, status, latency, 0.0, options)


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
