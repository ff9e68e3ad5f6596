"""The SSRF guard, proven with a canary: a listener on loopback that must never see a connection."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import given
from hypothesis import strategies as st

from jobs.engine.client import make_client
from jobs.engine.fetch import fetch_one
from jobs.engine.netguard import Blocked, Guard, parse_networks
from jobs.engine.values import FetchOptions
from tests.target import TargetServer

GUARD = Guard()
OPTIONS = FetchOptions(timeout=5, retries=2, backoff_base=0.01)


class Canary:
    """Listens on 127.0.0.1 (and ::1 on the same port when possible) and counts the connections it accepts."""

    def __init__(self) -> None:
        self.connections = 0
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def __enter__(self) -> Canary:
        v4 = socket.create_server(("127.0.0.1", 0))
        self.port = v4.getsockname()[1]
        self._sockets.append(v4)
        try:
            self._sockets.append(socket.create_server(("::1", self.port), family=socket.AF_INET6))
        except OSError:
            pass  # no IPv6 loopback here
        for sock in self._sockets:
            sock.settimeout(0.05)
            threading.Thread(target=self._accept, args=(sock,), daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for sock in self._sockets:
            sock.close()

    def _accept(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
            conn.close()


class StubResolver(AbstractResolver):
    """Answers every lookup with fixed addresses: a name that points at loopback, or rebinds to it."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.lookups = 0

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.lookups += 1
        return [
            {"hostname": host, "host": address, "port": port, "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
             "proto": 0, "flags": socket.AI_NUMERICHOST}
            for address in self.addresses
        ]  # fmt: skip

    async def close(self) -> None:
        pass


@pytest.fixture
def canary() -> Iterator[Canary]:
    with Canary() as listener:
        yield listener


@pytest.fixture
async def guarded() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(max_connections=10, guard=GUARD) as client:
        yield client


VECTORS = [
    "http://127.0.0.1:{port}/",
    "http://localhost:{port}/",
    "http://2130706433:{port}/",
    "http://0x7f.1:{port}/",
    "http://0x7f000001:{port}/",
    "http://127.1:{port}/",
    "http://0177.0.0.1:{port}/",
    "http://127.000.000.001:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[::ffff:7f00:1]:{port}/",
    "http://[::1]:{port}/",
    "http://0.0.0.0:{port}/",
    "http://[::]:{port}/",
    "http://0:{port}/",
    "http://[64:ff9b::7f00:1]:{port}/",
    "https://127.0.0.1:{port}/",
    "http://user:pass@127.0.0.1:{port}/",
    "http://127.0.0.1.:{port}/",
    "http://LOCALHOST:{port}/",
]


@pytest.mark.parametrize("vector", VECTORS)
async def test_no_vector_reaches_the_canary(canary: Canary, guarded: httpx.AsyncClient, vector: str) -> None:
    url = vector.format(port=canary.port)
    result = await fetch_one(guarded, 0, url, options=OPTIONS, guard=GUARD)

    assert (result.outcome, result.error_class, result.status_code) == ("failed", "blocked", None), result.error
    assert result.error.startswith("blocked: ")
    assert canary.connections == 0


async def test_the_canary_does_count(canary: Canary) -> None:
    """The control: with the guard lifted, the same URL does connect (so a 0 above means something)."""
    async with make_client(guard=Guard(allow_private=True)) as client:
        result = await fetch_one(client, 0, f"http://127.0.0.1:{canary.port}/", options=FetchOptions(timeout=2))
    assert result.outcome == "failed" and result.error_class != "blocked"
    assert canary.connections >= 1


@pytest.mark.parametrize("addresses", [("127.0.0.1",), ("93.184.216.34", "127.0.0.1"), ("::ffff:127.0.0.1",)])
async def test_a_name_resolving_to_loopback_is_refused_at_connect_time(canary: Canary, addresses: tuple[str, ...]) -> None:
    """The resolver on the connector checks what DNS said and passes on only checked addresses."""
    stub = StubResolver(*addresses)
    async with make_client(guard=GUARD, resolver=stub) as client:
        result = await fetch_one(client, 0, f"http://rebind.example:{canary.port}/", options=OPTIONS, guard=GUARD)

    assert (result.outcome, result.error_class) == ("failed", "blocked")
    assert result.error.startswith("blocked: rebind.example resolves to 127.0.0.1 is a loopback address") or (
        "embeds 127.0.0.1" in result.error
    )
    assert stub.lookups >= 1 and canary.connections == 0


async def test_every_redirect_hop_is_checked(canary: Canary) -> None:
    """An allowed server (127.0.0.2, on the allow-list) redirects to the canary: the hop is refused."""
    guard = Guard(allow=parse_networks("127.0.0.2/32"))
    with TargetServer(host="127.0.0.2") as allowed:
        async with make_client(guard=guard) as client:
            for location in (f"http://127.0.0.1:{canary.port}/", f"http://localhost:{canary.port}/x"):
                url = allowed.url(f"/redirect-to?url={location}")
                result = await fetch_one(client, 0, url, options=OPTIONS, guard=guard)
                assert (result.outcome, result.error_class, result.redirects, result.status_code) == (
                    "failed", "blocked", 1, 302,
                ), result.error  # fmt: skip
            ok = await fetch_one(client, 0, allowed.url("/ok"), options=OPTIONS, guard=guard)
    assert ok.outcome == "succeeded"  # the allow-list works
    assert canary.connections == 0


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "100.127.255.254",
        "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "0.0.0.0", "198.18.0.1", "192.0.2.1",
        "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
        "64:ff9b::a00:1", "64:ff9b::7f00:1", "2002:7f00:1::", "2002:a00:1::", "2001:db8::1",
    ],
)  # fmt: skip
def test_non_public_addresses_are_refused(address: str) -> None:
    assert GUARD.address_problem(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_pass(address: str) -> None:
    assert GUARD.address_problem(ipaddress.ip_address(address)) is None


def test_allow_private_still_refuses_metadata_and_the_deny_list() -> None:
    guard = Guard(allow_private=True, deny=parse_networks("10.9.0.0/16, 8.8.8.0/24"))
    assert guard.address_problem(ipaddress.ip_address("127.0.0.1")) is None
    assert guard.address_problem(ipaddress.ip_address("169.254.169.254")) == "169.254.169.254 is a cloud metadata address"
    assert guard.address_problem(ipaddress.ip_address("fd00:ec2::254")) is not None
    assert guard.address_problem(ipaddress.ip_address("10.9.1.1")) == "10.9.1.1 is in a denied network"
    assert guard.address_problem(ipaddress.ip_address("8.8.8.8")) == "8.8.8.8 is in a denied network"


def test_parse_networks_names_the_bad_one() -> None:
    with pytest.raises(ValueError, match="not a network: '10.0.0.0/33'"):
        parse_networks("10.0.0.0/8, 10.0.0.0/33")


@pytest.mark.parametrize("url", ["ftp://example.com/", "file:///etc/passwd", "gopher://x/", "http:///nohost"])
def test_only_http_and_https(url: str) -> None:
    with pytest.raises(Blocked):
        GUARD.check_url(url)


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_any_ipv4_in_any_spelling_is_judged_like_its_address(value: int) -> None:
    """Dotted, integer, hex and IPv4-mapped spellings never pass unless the address itself is public."""
    address = ipaddress.IPv4Address(value)
    public = GUARD.address_problem(address) is None
    for host in (str(address), f"[::ffff:{address}]"):
        assert _passes(f"http://{host}/") is public
    for odd in (str(value), hex(value), f"{value >> 24}.{value & 0xFFFFFF}"):
        assert not _passes(f"http://{odd}/")  # odd spellings are refused outright


@pytest.mark.parametrize(
    "url", [v.format(port=8080) for v in VECTORS] + ["http://93.184.216.34/", "https://example.com/a?b", "ftp://x/"]
)
def test_check_host_on_httpx_parts_agrees_with_check_url(url: str) -> None:
    """The engine judges httpx's parse of a URL (check_host); a URL httpx cannot parse goes to check_url."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        assert not _passes(url)
        return
    try:
        GUARD.check_host(parsed.scheme, parsed.host)
    except Blocked:
        assert not _passes(url)
    else:
        assert _passes(url)


def _passes(url: str) -> bool:
    try:
        GUARD.check_url(url)
    except Blocked:
        return False
    return True


def test_settings_build_the_guard(settings: Any) -> None:
    from jobs import conf

    settings.FETCH_ALLOW_PRIVATE_ADDRESSES = False
    settings.FETCH_ALLOWED_NETWORKS = ["10.20.0.0/16"]
    settings.FETCH_DENIED_NETWORKS = "8.8.8.0/24"
    guard = conf.fetch_guard()
    assert guard.address_problem(ipaddress.ip_address("10.20.1.1")) is None
    assert guard.address_problem(ipaddress.ip_address("10.21.1.1")) is not None
    assert guard.address_problem(ipaddress.ip_address("8.8.8.8")) is not None


def test_system_checks_name_bad_fetch_settings(settings: Any) -> None:
    from jobs.checks import check_worker_timing

    assert check_worker_timing() == []
    settings.FETCH_DENIED_NETWORKS = "10.0.0.0/8, nope"
    settings.FETCH_RETRY_STATUSES = (503, 99)
    settings.FETCH_BACKOFF_CAP = -1
    settings.WORKER_CHUNK_SIZE = 0
    errors = {error.id: error.msg for error in check_worker_timing()}
    assert set(errors) == {"jobs.E004", "jobs.E005", "jobs.E006", "jobs.E007"}
    assert "WORKER_CHUNK_SIZE must be a whole number of URLs >= 1, not 0" in errors["jobs.E007"]
    assert "not a network: 'nope'" in errors["jobs.E004"]
