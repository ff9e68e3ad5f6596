"""The caps one request runs under: the job's limit, the host's slots and the worker's semaphore.

`Slots.acquire` takes them in a fixed order (the scarcest, worker-wide one
last) and refuses with `Stopped` once the run's stop event is set. Held only
while a request is in flight: a retry waiting for its backoff holds none.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import httpx

    from jobs.engine.hostslots import HostLimits
    from jobs.engine.values import FetchOptions

class Limit(Protocol):
    """What a job's limit needs: an asyncio.Semaphore, or a ShareLimit (its size changes)."""

    async def acquire(self) -> Any: ...

    def release(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Slots:
    """The caps a request runs under: the job's, the host's and the worker's."""

    job: Limit
    worker: asyncio.Semaphore | None = None
    hosts: HostLimits | None = None
    stop: asyncio.Event | None = None
    """Once set, no request starts: `hold` raises `Stopped` instead of yielding."""

    @contextlib.asynccontextmanager
    async def hold(self, url: httpx.URL, options: FetchOptions) -> AsyncIterator[None]:
        """Hold the slots for one request to `url` (see `acquire`)."""
        await self.acquire(url.host, options)
        try:
            yield
        finally:
            self.release(url.host)

    async def acquire(self, host: str, options: FetchOptions) -> None:
        """Job slot, then host slot (and pacing), then worker slot: the scarcest, worker-wide one is taken last,
        so it is never held while waiting for a busy host. Pair every return with `release(host)`.

        Plain acquire/release rather than nested context managers: this runs for every request.
        """
        await self.job.acquire()
        try:
            if self.hosts is not None:
                await self.hosts.acquire(
                    host, limit=options.per_host, delay=options.host_delay, rate=options.per_host_rate,
                    adaptive=options.autothrottle,
                )  # fmt: skip
            try:
                if self.worker is not None:
                    await self.worker.acquire()
                if self.stop is not None and self.stop.is_set():
                    # Checked last: the stop may have come while we waited for a slot.
                    if self.worker is not None:
                        self.worker.release()
                    raise Stopped
            except BaseException:
                if self.hosts is not None:
                    self.hosts.release(host)
                raise
        except BaseException:
            self.job.release()
            raise

    def observe(self, host: str, status: int, latency: float, retry_after: float, options: FetchOptions) -> None:
        """Tell the host's slots what a response said (its latency feeds autothrottle; Retry-After pauses)."""
        if self.hosts is not None:
            self.hosts.observe(
                host, status=status, latency=latency, retry_after=retry_after, per_host=options.per_host,
                adaptive=options.autothrottle,
            )  # fmt: skip

    def release(self, host: str) -> None:
        if self.worker is not None:
            self.worker.release()
        if self.hosts is not None:
            self.hosts.release(host)
        self.job.release()


class Stopped(Exception):
    """The run was stopped before this request could start (see `fetch_all`'s `stop`)."""
