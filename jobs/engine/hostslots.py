"""Per-host request slots, shared by every job of a worker: a FIFO cap and a pacing delay.

Pure asyncio (no Django), used by the fetch engine (`slots.Slots`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol


class HostLimits(Protocol):
    """What the engine needs of per-host slots: `HostSlots` (one worker) or `FleetSlots` (every worker)."""

    async def acquire(
        self, host: str, *, limit: int, delay: float = 0.0, rate: float | None = None, adaptive: bool = False
    ) -> None: ...

    def release(self, host: str) -> None: ...

    def snapshot(self) -> dict[str, int]: ...

    def observe(
        self, host: str, *, status: int, latency: float, retry_after: float = 0.0, per_host: int, adaptive: bool
    ) -> None: ...


@dataclass(slots=True)
class _Host:
    in_flight: int = 0
    waiters: deque[tuple[asyncio.Future[None], int]] = field(default_factory=deque)
    next_start: float = 0.0


class HostSlots:
    """In-flight requests per host, FIFO, shared by every job of a worker; plus a minimum delay between starts.

    Each caller brings its own limit (the job's `per_host`): a request starts
    when fewer than that many requests to the host are in flight, in order of
    arrival. The registry forgets idle hosts, so it does not grow with the
    number of hosts ever seen.
    """

    def __init__(self) -> None:
        self._hosts: dict[str, _Host] = {}

    def in_flight(self, host: str) -> int:
        state = self._hosts.get(host)
        return state.in_flight if state else 0

    def snapshot(self) -> dict[str, int]:
        """Requests holding a slot, per host that has any. Safe to call from another thread (metrics)."""
        return {host: state.in_flight for host, state in list(self._hosts.items()) if state.in_flight}

    @contextlib.asynccontextmanager
    async def hold(self, host: str, *, limit: int, delay: float = 0.0) -> AsyncIterator[None]:
        """Hold one of `limit` slots of `host`, after waiting for its pacing delay."""
        await self.acquire(host, limit=limit, delay=delay)
        try:
            yield
        finally:
            self.release(host)

    async def acquire(
        self, host: str, *, limit: int, delay: float = 0.0, rate: float | None = None, adaptive: bool = False
    ) -> None:
        """`hold` without a context manager (the engine's hot path): pair every return with `release(host)`.

        A `rate` paces like a delay of 1 / rate; `adaptive` (autothrottle) needs `FleetSlots` and is ignored.
        """
        if rate:
            delay = max(delay, 1 / rate)
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts[host] = _Host()
        await self._acquire(state, limit)
        if delay > 0:
            try:
                loop = asyncio.get_running_loop()
                start = max(loop.time(), state.next_start)
                state.next_start = start + delay
                await asyncio.sleep(start - loop.time())
            except BaseException:
                self._release(host, state)
                raise

    def occupy(self, host: str) -> None:
        """Count a request already in flight to `host` (its slot taken elsewhere) as holding one of these slots,
        even over the limit: later acquires wait for it. Pair with `release(host)`."""
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts[host] = _Host()
        state.in_flight += 1

    def release(self, host: str) -> None:
        """Give back a slot taken with `acquire`."""
        self._release(host, self._hosts[host])

    def observe(
        self, host: str, *, status: int, latency: float, retry_after: float = 0.0, per_host: int, adaptive: bool
    ) -> None:
        """What a response said: nothing to do for one worker's slots (a retry waits its Retry-After itself)."""

    async def _acquire(self, state: _Host, limit: int) -> None:
        if state.in_flight < limit and not state.waiters:
            state.in_flight += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.waiters.append((future, limit))
        try:
            await future  # the releasing side counted us in already
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                state.in_flight -= 1  # granted just as we were cancelled: hand it on
                self._wake(state)
            raise

    def _release(self, host: str, state: _Host) -> None:
        state.in_flight -= 1
        self._wake(state)
        self._forget_if_idle(host, state)

    def _forget_if_idle(self, host: str, state: _Host) -> None:
        if state.in_flight or state.waiters or self._hosts.get(host) is not state:
            return
        loop = asyncio.get_running_loop()
        if state.next_start > loop.time():
            # Its pacing still matters until then: look again at that time.
            loop.call_at(state.next_start, self._forget_if_idle, host, state)
        else:
            del self._hosts[host]

    @staticmethod
    def _wake(state: _Host) -> None:
        while state.waiters:
            future, limit = state.waiters[0]
            if future.done():  # cancelled while waiting
                state.waiters.popleft()
                continue
            if state.in_flight >= limit:
                return
            state.waiters.popleft()
            state.in_flight += 1
            future.set_result(None)
