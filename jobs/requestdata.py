"""Stored requests (a Job's defaults, a RequestLine's overrides) to the engine's `RequestSpec`, and to what is shown.

Headers are stored (`Job.request_headers`, `RequestLine.headers`) as a JSON list of `[name, value]` pairs in submission
order; a secret header's value is `null` there, and the real values of a row's
secret headers are one sealed JSON list (`crypto.seal`) in `sealed_headers`.
So whatever reads `headers` (the API, the admin, pages, exports) shows `•••`
and never holds a secret; only the worker unseals, when it builds the requests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobs import crypto
from jobs.engine.requestspec import SECRET_HEADERS, RequestSpec

if TYPE_CHECKING:
    from jobs.models import Job, RequestLine


@dataclass(frozen=True, slots=True)
class LineRecord:
    """What one line overrides of the job's request (a `RequestLine` row); positions are the job's."""

    position: int
    method: str = ""
    """"" keeps the job's method."""
    headers: list[list[Any]] | None = None
    """`[[name, value | null]]` (null: sealed), replacing the job's headers of those names."""
    sealed_headers: str = ""
    body: str | None = None
    """None keeps the job's body."""


MASK = "•••"
REQUEST_FIELDS = ("method", "request_headers", "sealed_headers", "request_body", "retry_unsafe")
"""The Job fields of its request (a re-run copies them as they are)."""
Pairs = tuple[tuple[str, str], ...]


def store_headers(pairs: Iterable[tuple[str, str]], *, secret: Iterable[str] = ()) -> tuple[list[list[Any]], str]:
    """(the `headers` JSON, the `sealed_headers` text) of validated header pairs; `secret`: lowercase names
    marked secret besides SECRET_HEADERS."""
    marked = SECRET_HEADERS | {name.lower() for name in secret}
    shown: list[list[Any]] = []
    hidden: list[list[str]] = []
    for name, value in pairs:
        if name.lower() in marked:
            shown.append([name, None])
            hidden.append([name, value])
        else:
            shown.append([name, value])
    return shown, crypto.seal(json.dumps(hidden)) if hidden else ""


def shown_headers(headers: Sequence[Sequence[Any]] | None) -> dict[str, str]:
    """Name -> value for display and exports, secret values as `•••`."""
    return {name: MASK if value is None else value for name, value in headers or ()}


def body_sha256(body: str | None) -> str:
    """Hex SHA-256 of the body as sent (UTF-8), "" without one."""
    return hashlib.sha256(body.encode()).hexdigest() if body is not None else ""


def request_summary(method: str, headers: Sequence[Sequence[Any]] | None, body: str | None) -> dict[str, Any]:
    """What the API and exports show of a request: method, masked headers, body size and hash (never the body)."""
    return {
        "method": method,
        "headers": shown_headers(headers),
        "body_bytes": len(body.encode()) if body is not None else None,
        "body_sha256": body_sha256(body),
    }


def line_summary(job: Job, line: RequestLine | None) -> dict[str, Any]:
    """`request_summary` of the request one row of `job` sends (its line's overrides applied)."""
    if line is None:
        return request_summary(job.method, job.request_headers, job.request_body)
    merged = _merge(_pairs(job.request_headers), _pairs(line.headers))
    return request_summary(line.method or job.method, [list(pair) for pair in merged],
                           line.body if line.body is not None else job.request_body)  # fmt: skip


def job_spec(job: Job) -> RequestSpec | None:
    """The engine request of `job`'s lines without overrides; None for a plain GET (the engine's fast path).

    Unseals the secret headers: SealBroken if no configured key opens them."""
    if job.method == "GET" and not job.request_headers and job.request_body is None:
        return None
    headers = _unsealed(job.request_headers, job.sealed_headers)
    return RequestSpec(
        method=job.method, headers=headers, body=_bytes(job.request_body), secret=_secret(job.request_headers)
    )


LINE_FIELDS = ("position", "method", "headers", "sealed_headers", "body")
"""The RequestLine columns of a `LineRow`, in its order (claims.claim_chunk reads them with a chunk's URLs)."""
LineRow = tuple[int, str, Sequence[Sequence[Any]] | None, str, str | None]


def line_specs(job: Job, rows: Iterable[LineRow]) -> dict[int, RequestSpec]:
    """Position -> the engine request of each overriding line: the job's headers replaced by name by the
    line's own, the line's method and body or the job's. The job's part is unsealed and worked out once;
    rows are plain tuples, not models (the worker reads 500 lines per chunk on its hot path)."""
    base = _unsealed(job.request_headers, job.sealed_headers)
    secret = _secret(job.request_headers)
    specs = {}
    for position, method, headers, sealed, body in rows:
        own = _unsealed(headers, sealed)
        specs[position] = RequestSpec(
            method=method or job.method,
            headers=_merge(base, own) if own else base,
            body=_bytes(body if body is not None else job.request_body),
            secret=secret | _secret(headers) if headers else secret,
        )
    return specs


def _merge(base: Pairs, override: Pairs) -> Pairs:
    replaced = {name.lower() for name, _ in override}
    return tuple(pair for pair in base if pair[0].lower() not in replaced) + override


def _pairs(headers: Sequence[Sequence[Any]] | None) -> Pairs:
    return tuple((name, MASK if value is None else value) for name, value in headers or ())


def _unsealed(headers: Sequence[Sequence[Any]] | None, sealed: str) -> Pairs:
    """The header pairs with the secret values put back, in their submitted order."""
    if not headers:
        return ()
    secrets = iter(json.loads(crypto.unseal(sealed))) if sealed else iter(())
    pairs = []
    for name, value in headers:
        if value is None:
            secret_name, value = next(secrets, (None, None))
            if secret_name != name:
                raise crypto.SealBroken(f"the sealed headers do not match their names (expected {name})")
        pairs.append((name, value))
    return tuple(pairs)


def _secret(headers: Sequence[Sequence[Any]] | None) -> frozenset[str]:
    return SECRET_HEADERS | {name.lower() for name, value in headers or () if value is None}


def _bytes(body: str | None) -> bytes | None:
    return body.encode() if body is not None else None
