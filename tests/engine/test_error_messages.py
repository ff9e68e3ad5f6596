"""Errors a person can read: a short message per class, and the attempt history once (jobs/engine/errors.py)."""

from __future__ import annotations

import errno
import socket
import ssl

import aiohttp
import httpx
import pytest
from aiohttp.client_reqrep import ConnectionKey

from jobs.engine.errors import _describe, format_error, split_error
from jobs.engine.fetch import fetch_one
from tests.engine.helpers import FAST


def _key(host: str, port: int = 80, is_ssl: bool = False) -> ConnectionKey:
    return ConnectionKey(host, port, is_ssl, True, None, None, None)


def _wrapped(cause: Exception) -> Exception:
    """As the transport raises it: an httpx error chained from aiohttp's."""
    error = httpx.ConnectError(str(cause))
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        (aiohttp.ClientConnectorError(_key("127.0.0.1", 9), ConnectionRefusedError(errno.ECONNREFUSED, "refused")),
         ("connect", "connection refused by 127.0.0.1:9")),
        (aiohttp.ClientConnectorError(_key("::1", 9), ConnectionRefusedError(errno.ECONNREFUSED, "refused")),
         ("connect", "connection refused by [::1]:9")),
        (aiohttp.ClientConnectorError(_key("10.9.9.9", 80), OSError(errno.EHOSTUNREACH, "No route to host")),
         ("connect", "no route to 10.9.9.9:80")),
        (aiohttp.ClientConnectorError(_key("10.9.9.9", 80), OSError(errno.EPERM, "Operation not permitted")),
         ("connect", "cannot connect to 10.9.9.9:80 (Operation not permitted)")),
        (aiohttp.ClientConnectorDNSError(_key("nowhere.invalid"), socket.gaierror(socket.EAI_NONAME, "Name or service not known")),
         ("dns", "no such host nowhere.invalid")),
        (aiohttp.ClientConnectorDNSError(_key("flaky.example"), socket.gaierror(socket.EAI_AGAIN, "Temporary failure")),
         ("dns", "temporary DNS failure for flaky.example")),
        (aiohttp.ClientConnectorSSLError(_key("self.example", 443, True), ssl.SSLError(1, "WRONG_VERSION_NUMBER")),
         ("tls", "TLS handshake with self.example:443 failed (WRONG_VERSION_NUMBER)")),
        (aiohttp.ServerDisconnectedError(),
         ("protocol", "the server closed the connection before the response was complete")),
    ],
)  # fmt: skip
def test_short_message_per_class(cause: Exception, expected: tuple[str, str]) -> None:
    assert _describe(_wrapped(cause), 5) == expected


def test_the_history_is_written_once_and_read_back() -> None:
    refused = ("connect", "connection refused by 127.0.0.1:9")
    same = format_error(refused, [refused, refused])
    assert same == "connect: connection refused by 127.0.0.1:9 (the same on all 3 attempts)"
    assert split_error(same) == ("connect: connection refused by 127.0.0.1:9", ["the same on all 3 attempts"])

    mixed = format_error(("timeout", "no complete response within 5 s"),
                         [refused, refused, ("http_status", "503 Service Unavailable")])
    assert mixed == (
        "timeout: no complete response within 5 s (attempts 1-2: connect: connection refused by 127.0.0.1:9; "
        "attempt 3: http_status: 503 Service Unavailable)"
    )
    assert split_error(mixed) == (
        "timeout: no complete response within 5 s",
        ["attempts 1-2: connect: connection refused by 127.0.0.1:9", "attempt 3: http_status: 503 Service Unavailable"],
    )
    # Succeeded on the second attempt: only the history is kept.
    assert format_error(None, [("http_status", "429 Too Many Requests")]) == "(attempt 1: http_status: 429 Too Many Requests)"
    # A message with parentheses of its own is not taken for a history.
    own = "invalid_url: not an absolute http(s) URL (bad port)"
    assert split_error(own) == (own, [])
    assert format_error(None, []) == ""


async def test_a_refused_connection_reads_short_and_once(refused_url: str) -> None:
    from jobs.engine.client import make_client

    async with make_client(max_connections=5) as client:
        result = await fetch_one(client, 0, refused_url, options=FAST)
    where = refused_url.removeprefix("http://").rstrip("/")
    assert (result.attempts, result.error_class) == (3, "connect")
    assert result.error == f"connect: connection refused by {where} (the same on all 3 attempts)"
