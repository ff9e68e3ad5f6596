"""What one request of a batch sends: method, headers, body, and how they change across redirects. No Django.

A job of plain URLs has no `RequestSpec` at all (the engine's GET fast path).
A spec is built once per job (its defaults) or per line that overrides them,
and turns into an `httpx.Request` per hop with `build`, without httpx's header
merging (the raw header list is prepared once, in `__post_init__`).

Redirects follow what browsers and httpx do (`after_redirect`): 301/302 after a
POST and 303 after anything but HEAD become a GET without a body (and without
the headers that describe it); 307/308 keep the method and the body. Secret
headers (`secret`, lowercase names) are dropped once a redirect leaves the
origin (scheme, host and port) and stay dropped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import httpx

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
"""RFC 9110 9.2.2: repeating these has the effect of sending them once, so a failed attempt may be retried."""
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})
"""Always secret (lowercase); a job may mark more names secret."""
BODY_HEADERS = frozenset({"content-type", "content-encoding", "content-language", "content-location"})
"""Describe the body: dropped with it when a redirect turns the request into a GET (Fetch standard 4.4)."""
_WITH_LENGTH = frozenset({"POST", "PUT", "PATCH"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """Method, headers and body of one request (the URL comes with the item)."""

    method: str = "GET"
    """Upper case, one of METHODS."""
    headers: tuple[tuple[str, str], ...] = ()
    """Sent after the client's own (a name given here replaces the client's: e.g. User-Agent)."""
    body: bytes | None = None
    secret: frozenset[str] = SECRET_HEADERS
    """Lowercase names never sent to another origin after a redirect."""
    _names: frozenset[bytes] = field(init=False, repr=False, compare=False)
    _raw: tuple[tuple[bytes, bytes], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        raw = tuple((name.encode("ascii"), value.encode("ascii")) for name, value in self.headers)
        object.__setattr__(self, "_raw", raw)
        object.__setattr__(self, "_names", frozenset(name.lower() for name, _ in raw))

    @property
    def idempotent(self) -> bool:
        return self.method in IDEMPOTENT

    def build(self, client: httpx.AsyncClient, url: httpx.URL, *, connect_timeout: float) -> httpx.Request:
        """The request to `url`: Host, the client's headers (unless replaced), ours, Content-Length, the body.

        Only the connect is timed by httpx (`connect_timeout` seconds): the engine's deadline bounds the rest."""
        raw = [(b"Host", url.netloc)]
        raw.extend(pair for pair in client.headers.raw if pair[0].lower() not in self._names)
        raw.extend(self._raw)
        body = self.body
        if body is not None or self.method in _WITH_LENGTH:
            raw.append((b"Content-Length", str(len(body or b"")).encode()))
        request = httpx.Request(
            self.method, url, headers=httpx.Headers(raw, encoding="ascii"), stream=httpx.ByteStream(body or b""),
            extensions={"timeout": _timeouts(connect_timeout)},
        )  # fmt: skip
        request.read()
        return request

    def after_redirect(self, status: int, source: httpx.URL, target: httpx.URL) -> RequestSpec:
        """The request to send to `target`, which the `status` response to `source` redirected to."""
        spec = self
        if (status == 303 and self.method != "HEAD") or (status in (301, 302) and self.method == "POST"):
            kept = tuple(pair for pair in self.headers if pair[0].lower() not in BODY_HEADERS)
            spec = replace(spec, method="GET", body=None, headers=kept)
        if origin(source) != origin(target):
            kept = tuple(pair for pair in spec.headers if pair[0].lower() not in self.secret)
            if len(kept) != len(spec.headers):
                spec = replace(spec, headers=kept)
        return spec


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """(scheme, host, port), the port spelled out when it is the scheme's default."""
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


@functools.lru_cache(maxsize=64)
def _timeouts(connect: float) -> dict[str, float | None]:
    """httpx's timeout extension: the connect only (a shared dict; the transport only reads it)."""
    return httpx.Timeout(None, connect=connect).as_dict()
