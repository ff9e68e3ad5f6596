"""`TaggedSlots`: fleet-wide host slots that also record the hosts asked for under a tag (a job's, for its stats)."""

from __future__ import annotations

from jobs.engine.fleetscripts import tag_key
from jobs.engine.fleetslots import FleetSlots


class TaggedSlots:
    """A `FleetSlots` that records each new host it is asked for in the tag's Redis set."""

    TTL = 86400
    """Seconds the set of hosts outlives its last new host."""

    def __init__(self, slots: FleetSlots, tag: str) -> None:
        self._slots = slots
        self._key = tag_key(tag, slots.prefix)
        self._seen: set[str] = set()

    def in_flight(self, host: str) -> int:
        return self._slots.in_flight(host)

    async def acquire(
        self, host: str, *, limit: int, delay: float = 0.0, rate: float | None = None, adaptive: bool = False
    ) -> None:
        if host not in self._seen and not self._slots.degraded:
            self._seen.add(host)
            self._slots.link.spawn(self._remember(host))
        await self._slots.acquire(host, limit=limit, delay=delay, rate=rate, adaptive=adaptive)

    def release(self, host: str) -> None:
        self._slots.release(host)

    def observe(
        self, host: str, *, status: int, latency: float, retry_after: float = 0.0, per_host: int, adaptive: bool
    ) -> None:
        self._slots.observe(
            host, status=status, latency=latency, retry_after=retry_after, per_host=per_host, adaptive=adaptive
        )

    async def _remember(self, host: str) -> None:
        async with self._slots.link.redis.pipeline(transaction=False) as pipe:
            await self._slots.link.call(pipe.sadd(self._key, host).expire(self._key, self.TTL).execute())
