"""Reading one response into the attempt's record: the wanted headers, the status, the body.

The body streams through `Decoder` (jobs/engine/decoding.py), is counted and
capped at `max_bytes` after decoding, hashed, and handed to the `BodySink` if
any. A status the options retry carries the server's Retry-After.
"""

from __future__ import annotations

import email.utils
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import httpx

from jobs.engine.decoding import Decoder
from jobs.engine.errors import _Failure

if TYPE_CHECKING:
    from jobs.engine.values import BodySink, FetchOptions


@dataclass(slots=True)
class _Attempt:
    """What one attempt saw (filled in as it goes, so a failure still reports the status and URL)."""

    url: str
    status_code: int | None = None
    content_type: str = ""
    headers: tuple[tuple[str, str], ...] | None = None
    """The last response's headers as (name, value) pairs (`_headers`); None before one arrived."""
    bytes: int = 0
    sha256: str = ""
    redirects: int = 0
    body_path: str = ""
    started: float | None = None
    """Loop time the URL's first request could go out (it held its slots): `elapsed_ms` counts from here,
    so a wait for a slot is not the URL's time. Carried from attempt to attempt."""


_WANTED = frozenset({b"content-type", b"location", b"content-encoding"})
_MASKED = frozenset({b"set-cookie", b"set-cookie2"})
"""Response headers whose values are session secrets of the fetched site: kept as MASK."""
MASK = "•••"
HEADERS_MAX_CHARS = 8192
"""Names and values of one response's headers kept at most; the rest is summed up in one last pair."""


def _headers(response: httpx.Response, attempt: _Attempt) -> dict[bytes, str]:
    """The response headers the engine reads, in one pass (a `Headers.get` scans every header each time).

    Repeated headers are joined with ", " as `Headers.get` does. Every header is
    also kept, in order, on `attempt.headers` (Set-Cookie masked, within
    HEADERS_MAX_CHARS), for the result's detail.
    """
    found: dict[bytes, str] = {}
    kept: list[tuple[str, str]] = []
    room = HEADERS_MAX_CHARS
    encoding = response.headers.encoding
    for name, value in response.headers.raw:
        key = name.lower()
        text = value.decode(encoding)
        if key in _WANTED:
            found[key] = f"{found[key]}, {text}" if key in found else text
        elif key in _MASKED:
            text = MASK
        room -= len(name) + len(text)
        if room >= 0:
            kept.append((name.decode(encoding), text))
    if room < 0:
        dropped = len(response.headers.raw) - len(kept)
        kept.append(("…", f"{dropped} more not kept (over {HEADERS_MAX_CHARS} characters)"))
    attempt.headers = tuple(kept)
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
