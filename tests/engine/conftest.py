"""Fixtures of the engine's tests: a loopback target server per module, the worker's client, a refused port."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from jobs.engine.client import make_client
from tests.target import TargetServer


@pytest.fixture(scope="module")
def server() -> Iterator[TargetServer]:
    with TargetServer(body_bytes=64) as target:
        yield target


@pytest.fixture
def target(server: TargetServer) -> TargetServer:
    """The module's server, idle and with fresh counters."""
    server.wait_for(lambda s: s.in_flight == 0)
    server.reset_stats()
    return server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(max_connections=50) as client:
        yield client


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback URL nothing listens on: the port stays bound (so nobody else takes it) but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
