"""Error classification: the exception a transport raises becomes the right error class and message."""

from __future__ import annotations

import socket

import aiohttp
import httpx
import pytest
from aiohttp.client_reqrep import ConnectionKey

from jobs.engine.fetch import fetch_one


def _dns_error_as_httpx_aiohttp_raises_it() -> Exception:
    """httpx_aiohttp wraps aiohttp's DNS error in httpx.ConnectTimeout (seen with a real lookup of a .invalid host)."""
    key = ConnectionKey("nowhere.invalid", 80, False, True, None, None, None)
    cause = aiohttp.ClientConnectorDNSError(key, socket.gaierror(-2, "Name or service not known"))
    error = httpx.ConnectTimeout(str(cause))
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (httpx.ConnectError("[Errno -2] Name or service not known"), "dns: [Errno -2] Name or service not known"),
        (
            _dns_error_as_httpx_aiohttp_raises_it(),
            "dns: no such host nowhere.invalid",
        ),
        (httpx.ConnectError("[Errno 111] Connection refused"), "connect: [Errno 111] Connection refused"),
        (httpx.ConnectTimeout("timed out"), "timeout: no complete response within 2 s"),
        (httpx.RemoteProtocolError("peer closed connection"), "protocol: peer closed connection"),
        (httpx.ReadError("reset\nby peer"), "protocol: reset by peer"),
        (RuntimeError("boom"), "other: RuntimeError: boom"),
    ],
)
async def test_exception_mapping(exc: Exception, error: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        result = await fetch_one(client, 1, "http://example.test/", timeout=2)

    assert (result.outcome, result.error, result.status_code, result.bytes) == ("failed", error, None, 0)
