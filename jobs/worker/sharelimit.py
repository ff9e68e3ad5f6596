"""A semaphore whose size can change: a worker's slots of a job it shares with others.

`queue.check_share` rebalances a job's concurrency among the workers sharing
it; the worker applies its current part here. Shrinking never interrupts a
request in flight: it only keeps new ones waiting until the in-flight count is
below the new size (the worker records the smaller part in the database once
`in_flight` fits it). Waiters are served first come, first served.
"""

from __future__ import annotations

import asyncio
from collections import deque


class ShareLimit:
    """`async with limit:` holds one of `size` slots; `resize()` changes `size` at any time."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"size must be at least 0, not {size}")
        self.size = size
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.in_flight < self.size and not self._waiters:
            self.in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted, then cancelled before we could use it: pass the slot on
            elif waiter in self._waiters:  # (_wake drops cancelled waiters it meets)
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def resize(self, size: int) -> None:
        self.size = max(size, 0)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.size:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1  # counted for the waiter before it runs, so nobody jumps the queue
                waiter.set_result(None)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()
