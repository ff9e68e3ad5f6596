"""Error classification: how a failed attempt becomes an `error_class` and a message, in one place.

`_Failure` is what the engine raises for a failure it recognises itself
(too large, too many redirects, blocked, a bad status); `_describe` classifies
any other exception (the transport's, httpx's, aiohttp's) by its type and
cause, with a short message a person can read ("connection refused by
127.0.0.1:9", "no such host nowhere.invalid"). `RETRYABLE_CLASSES` are retried
whatever the options say. `format_error` writes a result's `error` (the last
failure, then the earlier attempts once, the same ones grouped) and
`split_error` reads it back for the detail view.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
import zlib
from typing import Any

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
DEADLINE = "deadline"
"""The error class of a URL that ran out of its `url_deadline`."""

# Short words for the connect errors people meet; anything else keeps the system's own text.
_CONNECT_ERRNOS = {
    errno.ECONNREFUSED: "connection refused by {where}",
    errno.ECONNRESET: "connection reset by {where}",
    errno.EHOSTUNREACH: "no route to {where}",
    errno.ENETUNREACH: "network unreachable for {where}",
    errno.ETIMEDOUT: "connecting to {where} timed out",
}
_DNS_ERRNOS = {
    socket.EAI_NONAME: "no such host {host}",
    socket.EAI_AGAIN: "temporary DNS failure for {host}",
    getattr(socket, "EAI_NODATA", -5): "no address for {host}",
}
MAX_GROUPS = 10
"""Groups of earlier attempts spelled out in `error` at most (the attempt count is always right)."""


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
        return "dns", _dns_message(cause, message)
    if isinstance(cause, _TLS):
        return "tls", _tls_message(cause, message)
    if isinstance(cause, _TIMEOUT):
        return "timeout", f"no complete response within {timeout:g} s"
    if isinstance(cause, _CONNECT):
        return "connect", _connect_message(cause, message)
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return "protocol", "the server closed the connection before the response was complete"
    if isinstance(cause, _INVALID_URL):
        return "invalid_url", f"not an absolute http(s) URL ({message})"
    if isinstance(cause, _PROTOCOL):
        return "protocol", message
    if isinstance(cause, httpx.HTTPError) and "header" in message.lower():
        return "protocol", message
    return "other", f"{type(cause).__name__}: {message}"


def _where(exc: aiohttp.ClientConnectorError) -> str:
    host = f"[{exc.host}]" if ":" in exc.host else exc.host
    return f"{host}:{exc.port}" if exc.port is not None else host


def _connect_message(cause: BaseException, message: str) -> str:
    """"connection refused by 127.0.0.1:9" for aiohttp's connect errors; the text as it is otherwise."""
    if isinstance(cause, aiohttp.ClientConnectorError):
        template = _CONNECT_ERRNOS.get(cause.os_error.errno or 0)
        if template:
            return template.format(where=_where(cause))
        reason = cause.os_error.strerror or str(cause.os_error) or type(cause.os_error).__name__
        return f"cannot connect to {_where(cause)} ({reason})"
    return message


def _dns_message(cause: BaseException, message: str) -> str:
    """"no such host nowhere.invalid" for aiohttp's lookup errors; the text as it is otherwise."""
    if isinstance(cause, aiohttp.ClientConnectorDNSError):
        template = _DNS_ERRNOS.get(cause.os_error.errno or 0)
        if template:
            return template.format(host=cause.host)
        return f"lookup of {cause.host} failed ({cause.os_error.strerror or cause.os_error})"
    return message


def _tls_message(cause: BaseException, message: str) -> str:
    """"certificate of example.com not valid (...)" / "TLS handshake with host:443 failed (...)"."""
    if isinstance(cause, aiohttp.ClientConnectorCertificateError):
        reason = getattr(cause.certificate_error, "verify_message", "") or cause.certificate_error
        return f"certificate of {cause.host} not accepted ({reason})"
    if isinstance(cause, aiohttp.ClientConnectorError):
        reason = getattr(cause.os_error, "reason", "") or cause.os_error.strerror or cause.os_error
        return f"TLS handshake with {_where(cause)} failed ({reason})"
    return message


def format_error(final: tuple[str, str] | None, earlier: list[tuple[str, str]]) -> str:
    """A result's `error`: `<class>: <message>` of the last failure, then each earlier attempt once.

    Earlier attempts that failed the same way are grouped ("attempts 1-2: ..."),
    and when every attempt failed like the last, it says so instead of
    repeating it: `connect: connection refused by 127.0.0.1:9 (the same on all 3 attempts)`.
    A URL that succeeded after failures keeps only the history: `(attempt 1: timeout: ...)`.
    """
    text = f"{final[0]}: {final[1]}" if final else ""
    if not earlier:
        return text
    groups: list[list[Any]] = []
    for number, reason in enumerate(earlier, start=1):
        if groups and groups[-1][2] == reason:
            groups[-1][1] = number
        else:
            groups.append([number, number, reason])
    if final is not None and len(groups) == 1 and groups[0][2] == final:
        return f"{text} (the same on all {len(earlier) + 1} attempts)"
    shown = [
        f"attempt {first}: {cls}: {message}" if first == last else f"attempts {first}-{last}: {cls}: {message}"
        for first, last, (cls, message) in groups[:MAX_GROUPS]
    ]
    if len(groups) > MAX_GROUPS:
        shown.append(f"{len(groups) - MAX_GROUPS} more")
    history = "(" + "; ".join(shown) + ")"
    return f"{text} {history}" if text else history


_HISTORY = re.compile(r"(?:^| )\((attempts? \d.*|the same on all \d+ attempts)\)$", re.DOTALL)
_HISTORY_ITEM = re.compile(r"; (?=attempts? \d|\d+ more$)")


def split_error(error: str) -> tuple[str, list[str]]:
    """`format_error`'s text back as (the last failure, the earlier attempts, one line per group)."""
    match = _HISTORY.search(error)
    if match is None:
        return error, []
    return error[: match.start()], _HISTORY_ITEM.split(match.group(1))


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
