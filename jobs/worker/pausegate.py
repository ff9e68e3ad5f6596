"""A gate in front of the worker-wide request limit, so pausing a job starts no new request.

`fetch_all` holds its `global_limit` exactly while a request is in flight, and
its consumers may already hold the next URLs (its queue is `concurrency` deep).
Wrapping the limit in a `PauseGate` lets the worker stop a job between two
requests without touching the fetch engine: once `close()`d, the gate lets no
consumer through (they wait until the worker cancels `fetch_all`), and
`drained()` returns when the requests that were already in flight have
finished. The URLs the parked consumers held stay `pending` in the database,
so the job resumes with them.
"""

from __future__ import annotations

import asyncio


class PauseGate:
    """A closable `limit`, used like it (`acquire()`/`release()` or `async with`); see the module docstring."""

    def __init__(self, limit: asyncio.Semaphore) -> None:
        self._limit = limit
        self._in_flight = 0
        self._closed = False
        self._drained = asyncio.Event()
        self._never = asyncio.Event()  # parked consumers wait on it until cancelled

    @property
    def in_flight(self) -> int:
        """Requests passed through the gate and not finished yet."""
        return self._in_flight

    async def acquire(self) -> None:
        """Wait for the gate to be open and for the limit (the `asyncio.Semaphore` interface)."""
        if self._closed:
            await self._never.wait()
        await self._limit.acquire()
        if self._closed:  # closed while we waited for the limit
            self._limit.release()
            await self._never.wait()
        self._in_flight += 1

    def release(self) -> None:
        self._in_flight -= 1
        self._limit.release()
        if self._closed and self._in_flight == 0:
            self._drained.set()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def close(self) -> None:
        """Let no further request start."""
        self._closed = True
        if self._in_flight == 0:
            self._drained.set()

    async def drained(self) -> None:
        """Return once the gate is closed and no request is in flight."""
        await self._drained.wait()
