"""The engine's value types: the options a job is fetched with, the outcome of one URL, the body sink.

Plain frozen dataclasses and one small base class, shared by every other
engine module and by the worker, which builds `FetchOptions` from a Job row
(jobs/worker/options.py) and stores the `FetchResult`s (jobs/queue/).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.engine.requestspec import RequestSpec

# Backstop for requests made with the client outside fetch_one (fetch_one passes its own deadline).
DEFAULT_TIMEOUT = 30.0
MIB = 1024 * 1024
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """How to fetch the URLs of one job."""

    timeout: float = DEFAULT_TIMEOUT
    """Deadline of one attempt in seconds: every redirect hop and the whole body (httpx's own timeouts reset)."""
    retries: int = 0
    """Further attempts after a retryable failure."""
    retry_statuses: frozenset[int] = RETRY_STATUSES
    """Statuses that are retried (connect errors and timeouts always are)."""
    backoff_base: float = 0.5
    """Backoff before retry n is uniform(0, min(backoff_cap, backoff_base * 2**n)) seconds ("full jitter")."""
    backoff_cap: float = 30.0
    retry_after_cap: float = 60.0
    """A Retry-After longer than this is not waited for: the URL fails instead."""
    max_redirects: int = 10
    max_bytes: int = 10 * MIB
    """Largest body, counted after content decoding; more fails as `too_large`."""
    per_host: int = 8
    """Requests in flight to one host (name and port) at most: per worker with `HostSlots`, across every
    worker with `FleetSlots`."""
    host_delay: float = 0.0
    """Seconds between the starts of two requests to one host."""
    per_host_rate: float | None = None
    """Requests per second to one host at most (None: no rate); with `host_delay`, the longer spacing wins."""
    autothrottle: bool = False
    """Adapt the host's concurrency (1..per_host) to its latency and 429/503 answers (`FleetSlots`)."""
    respect_robots: bool = False
    """Consult each origin's robots.txt (fetched once per `fetch_all`) and skip what it disallows."""
    url_deadline: float | None = None
    """Seconds one URL may take over all its attempts and the waits between them, counted from when its first
    request may go out (it holds its slots); then it fails as `deadline`. None: only `retries` and `timeout` bound it."""
    request: RequestSpec | None = None
    """Method, headers and body of every URL without its own (None: a plain GET, the fast path)."""
    retry_unsafe: bool = False
    """Retry non-idempotent requests (POST, PATCH) after failures that may have reached the server too."""


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The outcome of fetching one URL."""

    position: int
    """0-based index of the URL in its job."""
    url: str
    outcome: str
    """"succeeded" (an HTTP response with status < 400) or "failed" (anything else)."""
    status_code: int | None
    """The last response's status, if one arrived (also on failures after the headers, e.g. a reset body)."""
    bytes: int
    """Body bytes after content decoding (what `sha256` covers), up to the cap."""
    elapsed_ms: int
    """Wall time of the whole fetch, retries included."""
    attempts: int
    """Attempts made (0 when the URL was refused before any request)."""
    error: str
    """"" on a first-time success; else "<class>: <message>" of the last failure, followed by
    "(attempt n: ...)" for each earlier failed attempt. A success after retries keeps those."""
    error_class: str = ""
    """"" on success, else timeout | connect | dns | tls | too_large | too_many_redirects | blocked |
    http_status | invalid_url | robots | protocol | deadline | other."""
    final_url: str = ""
    """The URL of the last response, after redirects."""
    content_type: str = ""
    sha256: str = ""
    """Hex digest of the complete decoded body ("" unless the body was read to the end)."""
    redirects: int = 0
    """Redirect hops followed in the last attempt."""
    body_path: str = ""
    """Where the body was stored, if the caller keeps bodies (set by the caller's sink)."""
    headers: tuple[tuple[str, str], ...] | None = None
    """The last response's headers as (name, value) pairs in the order received, Set-Cookie values masked
    ("•••"), at most 8 KiB of them; None when no response arrived."""


class BodySink:
    """Receives a body as it streams; the worker's implementation stores it. Base class: keeps nothing."""

    def write(self, chunk: bytes) -> None:
        """Called on the loop with each decoded piece (at most 64 KiB): must be quick."""

    async def finish(self) -> str:
        """The body was read completely; store it and return where ("" if nowhere)."""
        return ""

    def discard(self) -> None:
        """The body is incomplete or unwanted; drop what was written."""
