"""robots.txt for one job: fetched once per origin, cached, consulted before each URL. No Django.

The text is fetched with the engine itself (`fetch_one`: the SSRF guard, the
job's caps and deadline, redirects, a 512 KiB cap) and parsed with the
standard library's `urllib.robotparser`. What an answer means follows RFC 9309:
a 2xx body is the rules; a 4xx means no rules (everything allowed); a 5xx or
no answer at all means "disallow everything" until the next job.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

from jobs.engine.fetch import fetch_one
from jobs.engine.values import BodySink, FetchOptions, FetchResult

if TYPE_CHECKING:
    import httpx

    from jobs.engine.netguard import Guard
    from jobs.engine.slots import Slots

USER_AGENT = "batchfetch"
"""The product token matched against `User-agent:` lines (the client sends `batchfetch/<version>`)."""
MAX_ROBOTS_BYTES = 512 * 1024
"""RFC 9309 asks crawlers to read at least 500 KiB."""


class _Collect(BodySink):
    """Keeps a (small, capped) body in memory."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def discard(self) -> None:
        self.chunks.clear()


class RobotsCache:
    """Answers "may this URL be fetched?" for one job, fetching each origin's robots.txt at most once."""

    def __init__(
        self, client: httpx.AsyncClient, *, options: FetchOptions, slots: Slots, guard: Guard | None = None
    ) -> None:
        self._client = client
        # A plain GET whatever the job sends (no method, body or secret headers of the job go to robots.txt).
        self._options = replace(options, retries=0, max_bytes=MAX_ROBOTS_BYTES, max_redirects=5, request=None)
        self._slots = slots
        self._guard = guard
        self._rules: dict[str, asyncio.Task[tuple[RobotFileParser | None, FetchResult]]] = {}

    async def refusal(self, position: int, url: str) -> FetchResult | None:
        """A `robots` (or `blocked`) result if `url` must not be fetched, else None."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}".lower()
        task = self._rules.get(origin)
        if task is None:
            # A task, not a coroutine: URLs of the same origin arriving meanwhile wait for this one fetch.
            task = self._rules[origin] = asyncio.ensure_future(self._load(origin))
        parser, fetched = await asyncio.shield(task)
        if fetched.error_class == "blocked":
            return replace(fetched, position=position, url=url, attempts=0)
        if parser is not None and parser.can_fetch(USER_AGENT, url):
            return None
        if parser is not None:
            error = f"robots: disallowed by {origin}/robots.txt"
        else:
            error = f"robots: {origin}/robots.txt could not be read ({fetched.error}), so all of it is disallowed"
        return FetchResult(
            position=position, url=url, outcome="failed", status_code=None, bytes=0, elapsed_ms=0, attempts=0,
            error=error, error_class="robots",
        )  # fmt: skip

    async def _load(self, origin: str) -> tuple[RobotFileParser | None, FetchResult]:
        """(the rules, or None for "disallow all"; the fetch's result)."""
        body = _Collect()
        result = await fetch_one(
            self._client, 0, f"{origin}/robots.txt", options=self._options, guard=self._guard, slots=self._slots,
            sink=lambda: body,
        )  # fmt: skip
        parser = RobotFileParser(f"{origin}/robots.txt")
        code = result.status_code
        if result.outcome == "succeeded":
            parser.parse(b"".join(body.chunks).decode("utf-8", "replace").splitlines())
        elif code is not None and 400 <= code < 500:
            parser.allow_all = True
        else:
            return None, result  # 5xx, or unreachable: RFC 9309 says assume complete disallow
        return parser, result

    def close(self) -> None:
        """Cancel fetches still running (the job ended)."""
        for task in self._rules.values():
            task.cancel()
