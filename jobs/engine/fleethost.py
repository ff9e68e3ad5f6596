"""What one worker knows about one host of the fleet: its Redis keys, its waiters, the slots it holds or hands over.

`FleetSlots` keeps one `FleetHost` per host this worker requests. The
hand-over lives here: a release in a worker where a request waits for the same
kind of slot gives the slot straight to that request (it stays held in Redis,
its lease renewed), up to HANDOFF_MAX times in a row; then one goes back to
Redis so other workers get their turn.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from jobs.engine.fleetscripts import host_keys

HANDOFF_MAX = 8
"""Releases in a row handed straight to a waiter of the same worker before one goes back to Redis."""


class SlotKind(NamedTuple):
    """What a slot is taken under: a release hands over only to a waiter of the same kind."""

    limit: int
    interval: float
    adaptive: bool


@dataclass(slots=True)
class FleetHost:
    name: str
    prefix: str
    keys: dict[str, str] = field(init=False)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Only the first waiter of this worker asks Redis; the others queue behind it in order."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    holders: list[tuple[str, SlotKind]] = field(default_factory=list)
    """Slots this worker holds in Redis, each with the kind it was taken under."""
    demand: Counter[SlotKind] = field(default_factory=Counter)
    """Requests waiting here for a slot of this host, by kind."""
    pool: list[tuple[str, SlotKind]] = field(default_factory=list)
    """Slots handed over by releases here, not yet taken by a waiter (still held in Redis)."""
    gifts: int = 0
    """Hand-overs in a row: after HANDOFF_MAX a release goes to Redis, so other workers get their turn."""
    full: bool = False
    """The host was full at our last ask and no wake-up came since: the next waiter sleeps without asking."""
    asked_at: float = 0.0
    """Loop time of our last ask."""
    defer_until: float = 0.0
    """Loop time before which our waiter does not ask (we yielded a slot to waiting workers)."""
    local: int = 0
    """Slots this worker holds in the per-worker fallback (taken while Redis was unreachable)."""
    users: int = 0
    """Requests waiting for or holding a slot of this host here: the host is forgotten at 0."""
    paused_until: float = 0.0
    """Loop time before which no request starts (a Retry-After seen here, before Redis has it)."""

    def __post_init__(self) -> None:
        self.keys = host_keys(self.name, self.prefix)

    @property
    def held(self) -> int:
        """Requests to this host this worker has in flight."""
        return len(self.holders) + self.local

    @property
    def holder_names(self) -> list[str]:
        """Every holder this worker keeps in Redis (in flight or handed over): the leases to renew."""
        return [holder for holder, _ in [*self.holders, *self.pool]]

    def can_hand_over(self, kind: SlotKind) -> bool:
        """Whether a slot of `kind` given back now goes to a waiter here, without a round trip to Redis.

        Only with no pace or adaptive limit to honour (those are decided in Redis),
        and not after HANDOFF_MAX hand-overs in a row. A pause is checked by the waiter.
        """
        handed = sum(1 for _, held in self.pool if held == kind)
        return not kind.interval and not kind.adaptive and self.gifts < HANDOFF_MAX and self.demand[kind] > handed

    def hand_over(self, holder: str, kind: SlotKind) -> None:
        self.pool.append((holder, kind))
        self.gifts += 1
        self.wake.set()

    def take_gift(self, kind: SlotKind) -> str | None:
        """A slot of `kind` handed over here, taken out of the pool (None if there is none)."""
        for index, (holder, held) in enumerate(self.pool):
            if held == kind:
                del self.pool[index]
                return holder
        return None
