"""The URL rules: what makes a URL a valid fetch target, and the normal form it is stored and fetched in.

Checked once per URL of a submission (up to a million of them), so a valid URL
is split only once (`_check_url`) and normalised from those parts.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import NamedTuple
from urllib.parse import SplitResult, urlsplit, urlunsplit

import idna

from jobs import conf

# Long values are echoed back shortened; the index already identifies them.
MAX_ECHOED_VALUE = 200

_WHITESPACE = re.compile(r"\s")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DNS_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def url_problem(url: str, *, max_length: int | None = None) -> str | None:
    """Say what is wrong with `url` as a fetch target, or None if it is fine.

    Accepted: an absolute http or https URL with a valid host (DNS name,
    IPv4 or bracketed IPv6), an optional port 1-65535, at most `max_length`
    characters (default: setting JOBS_MAX_URL_LENGTH).
    """
    checked = _check_url(url, conf.get("JOBS_MAX_URL_LENGTH") if max_length is None else max_length)
    return checked if isinstance(checked, str) else None


class _Parts(NamedTuple):
    """A valid URL, split once (a submission checks and normalises up to a million of them)."""

    split: SplitResult
    host: str
    port: int | None


def _check_url(url: str, limit: int) -> _Parts | str:
    """`url` split, or what is wrong with it (see `url_problem`)."""
    if not url:
        return "empty URL"
    if len(url) > limit:
        return f"longer than {limit} characters"
    if _WHITESPACE.search(url):
        return "contains whitespace"
    if _CONTROL.search(url):
        return "contains control characters"
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    scheme = parts.scheme.lower()
    # "localhost:8000" parses with scheme "localhost": only "<scheme>://" counts as a scheme.
    if not scheme or not url[len(scheme) :].startswith("://"):
        return "not an absolute URL (must start with http:// or https://)"
    if scheme not in ("http", "https"):
        return f"scheme must be http or https, not {scheme!r}"
    if not host:
        return "missing host"
    if port == 0:
        return "invalid port 0"
    return _host_problem(host, bracketed=parts.netloc.rpartition("@")[2].startswith("[")) or _Parts(parts, host, port)


@functools.lru_cache(maxsize=4096)
def _host_problem(host: str, *, bracketed: bool) -> str | None:
    """Check a host: an IP literal or a DNS name (international names via IDNA).

    Cached: a pure function of its arguments, and the URLs of one submission mostly share a few hosts
    (checking the host was a fifth of the time spent per URL)."""
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"invalid IPv6 address {host!r}"
        return None
    try:
        ascii_name = ascii_host(host)
    except ValueError as exc:
        return f"invalid host name {_shorten(host)!r} ({exc})"
    labels = ascii_name.removesuffix(".").split(".")
    if len(ascii_name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        return f"invalid host name {_shorten(host)!r}"
    return None


def ascii_host(host: str) -> str:
    """A host name in lowercase ASCII: international names by IDNA 2008 with the UTS 46 mapping (as httpx
    and browsers do), so "Bücher.example" becomes "xn--bcher-kva.example". ValueError if it has none."""
    if host.isascii():
        return host.lower()
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(str(exc) or "not a valid international domain name") from exc


def normalise_url(url: str) -> str:
    """The form a valid URL (`url_problem` is None) is stored and fetched in.

    Surrounding whitespace goes, scheme and host become lowercase, the host
    ASCII (IDNA), an empty path "/", and the fragment (never sent to a server)
    goes. Port, credentials, path and query stay as written. Idempotent.
    """
    parts = urlsplit(url.strip())
    return _normalised(_Parts(parts, parts.hostname or "", parts.port))


def _normalised(url: _Parts) -> str:
    parts, host = url.split, url.host
    netloc = f"[{host}]" if ":" in host else ascii_host(host)
    if url.port is not None:
        netloc += f":{url.port}"
    if "@" in parts.netloc:
        netloc = parts.netloc.rpartition("@")[0] + "@" + netloc
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))


def _shorten(value: str) -> str:
    return value if len(value) <= MAX_ECHOED_VALUE else value[: MAX_ECHOED_VALUE - 1] + "…"
