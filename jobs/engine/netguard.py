"""The SSRF guard: which addresses a job may reach. Pure stdlib + aiohttp, no Django.

Two places enforce one policy (`Guard`):

- `Guard.check_url()` (or `check_host()` with the parts of a parsed URL) before
  every request (redirect hops included): only http/https, and an IP-literal
  host must be allowed. aiohttp never asks the resolver about IP literals, so
  they are judged here.
- `GuardedResolver`, the resolver of the transport's aiohttp connector: it
  resolves a host name, refuses the name unless *every* address is allowed,
  and returns only those checked addresses, which the connector then connects
  to. There is no second lookup between the check and the connect, so DNS
  rebinding cannot slip a private address in.

A refusal raises `Blocked` (not an OSError, so aiohttp does not turn it into a
DNS error); the engine records it as error class `blocked`.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud metadata endpoints: refused even when private addresses are allowed.
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SIXTOFOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
# Hosts that look numeric but are not a canonical dotted quad: 2130706433, 0x7f.1, 127.1, 0177.0.0.1.
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+))*\.?", re.IGNORECASE)


class Blocked(Exception):
    """The guard refused a URL or an address; the message says why."""


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs ("10.1.0.0/16, fd00::/8") to networks; ValueError names a bad one."""
    networks = []
    for item in text.split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"not a network: {item.strip()!r} ({exc})") from exc
    return tuple(networks)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 transition form carries (mapped, NAT64, 6to4, Teredo), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIXTOFOUR:
        return address.sixtofour
    if address in _TEREDO and address.teredo is not None:
        return address.teredo[1]  # the client's (obfuscated, decoded by ipaddress) address
    return None


def _not_public(address: IPAddress) -> str | None:
    """Why `address` is not a public unicast address, or None if it is."""
    if address.is_unspecified:
        return "unspecified address"
    if address.is_loopback:
        return "loopback address"
    if address.is_link_local:
        return "link-local address"
    if address.is_multicast:
        return "multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "shared (CGNAT) address"
    if address.is_private:
        return "private address"
    if address.is_reserved:
        return "reserved address"
    if not address.is_global:
        return "not a globally routable address"
    return None


@dataclass(frozen=True)
class Guard:
    """The policy: public unicast addresses only, unless `allow_private`; `allow`/`deny` networks override."""

    allow_private: bool = False
    """Lift the public-only rule (development and tests); `deny` and metadata addresses still apply."""
    allow: tuple[Network, ...] = field(default_factory=tuple)
    """Networks allowed even though not public (e.g. an internal API)."""
    deny: tuple[Network, ...] = field(default_factory=tuple)
    """Networks refused whatever else says."""

    def address_problem(self, address: IPAddress) -> str | None:
        """Why a connection to `address` is refused, or None if it is allowed."""
        if any(address in net for net in self.deny if net.version == address.version):
            return f"{address} is in a denied network"
        if address in METADATA_ADDRESSES:
            return f"{address} is a cloud metadata address"
        if any(address in net for net in self.allow if net.version == address.version):
            return None
        if self.allow_private:
            return None
        if isinstance(address, ipaddress.IPv6Address):
            embedded = _embedded_ipv4(address)
            if embedded is not None:
                inner = self.address_problem(embedded)
                return f"{address} embeds {inner}" if inner else None
        reason = _not_public(address)
        return f"{address} is a {reason}" if reason else None

    def check_address(self, address: str | IPAddress) -> None:
        """Raise Blocked unless a connection to `address` is allowed."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        problem = self.address_problem(ip)
        if problem:
            raise Blocked(problem)

    def check_url(self, url: str) -> None:
        """Raise Blocked for a non-http(s) URL or a refused IP-literal host; names are checked at resolution."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError as exc:
            raise Blocked(f"unparsable URL ({exc})") from exc
        self.check_host(parts.scheme, host or "")

    def check_host(self, scheme: str, host: str) -> None:
        """`check_url` of a URL parsed already: its scheme and its host (an IPv6 literal without brackets)."""
        if scheme.lower() not in ("http", "https"):
            raise Blocked(f"scheme {scheme!r} is not http or https")
        if not host:
            raise Blocked("URL has no host")
        problem = _host_problem(self, host)
        if problem:
            raise Blocked(problem)


@functools.lru_cache(maxsize=4096)
def _host_problem(guard: Guard, host: str) -> str | None:
    """Why `guard` refuses the URL host `host` as such, or None. Cached: every URL of a job is checked, and
    most share a few hosts (parsing an address and walking the networks is most of a check's cost)."""
    host = host.split("%", 1)[0]  # an IPv6 zone id
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        if _NUMERIC_HOST.fullmatch(host):
            # socket.inet_aton would read it as an address; nobody means a DNS name by it.
            return f"host {host!r} is an unusual spelling of an IP address"
        return None
    return guard.address_problem(literal)


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that returns a host's addresses only if the guard allows every one of them."""

    def __init__(self, guard: Guard, resolver: AbstractResolver | None = None) -> None:
        self.guard = guard
        self._resolver = resolver

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if self._resolver is None:
            self._resolver = DefaultResolver()  # created lazily: it may bind to the running loop
        results = await self._resolver.resolve(host, port, family)
        check_all(self.guard, host, (result["host"] for result in results))
        return results

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()


def check_all(guard: Guard, host: str, addresses: Iterable[str]) -> None:
    """Raise Blocked naming `host` unless every one of its addresses is allowed."""
    for address in addresses:
        problem = guard.address_problem(ipaddress.ip_address(address.split("%", 1)[0]))
        if problem:
            raise Blocked(f"{host} resolves to {problem}")

