"""Error classification: how a failed attempt becomes an `error_class` and a message, in one place.

`_Failure` is what the engine raises for a failure it recognises itself
(too large, too many redirects, blocked, a bad status); `_describe` classifies
any other exception (the transport's, httpx's, aiohttp's) by its type and
cause. `RETRYABLE_CLASSES` are retried whatever the options say.
"""

from __future__ import annotations

import ssl
import zlib

import aiohttp
import httpx

from jobs.engine.netguard import Blocked

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


class _Failure(Exception):
    """An attempt ended without a usable response: `error_class` and message."""

    def __init__(self, error_class: str, message: str, *, retryable: bool = False, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.retryable = retryable or error_class in RETRYABLE_CLASSES
        self.retry_after = retry_after
        """Seconds the server asked us to wait (Retry-After), 0 if it did not say."""


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
