"""What one worker knows about one host of the fleet: its Redis keys, its waiters, the slots it holds or reuses.

`FleetSlots` keeps one `FleetHost` per host this worker requests. The reuse of
slots lives here. A slot given back stays held in Redis (its lease renewed) and
goes into the host's `pool`, free for the next request here of the same kind,
without a round trip:

- **handed over** when a request here waits for that kind of slot;
- **kept** for KEEP_SECONDS when none waits but no other worker wants the host
  either (a busy worker's next request comes within milliseconds). When a
  worker finds the host full it says so on the wake-up channel; from then on,
  for CONTENDED_SECONDS, nothing is kept and idle kept slots go back at once.

While other workers want the host, at most HANDOFF_MAX hand-overs run in a row;
then a slot goes back to Redis so they get their turn. Only plain slots are
reused: a pace or an adaptive limit is decided in Redis for every request.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import NamedTuple

from jobs.engine.fleetscripts import host_keys

HANDOFF_MAX = 8
"""While other workers want the host: hand-overs in a row here before a slot goes back to Redis."""
KEEP_SECONDS = 0.05
"""How long a kept slot waits for a request here before it goes back to Redis."""
CONTENDED_SECONDS = 1.0
"""How long after another worker found the host full nothing is kept (its waiter re-asks more often)."""


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
    pool: dict[SlotKind, deque[str]] = field(default_factory=dict)
    """Slots given back here and reused (handed over or kept), not yet taken by a request (still held in Redis)."""
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
    contended_until: float = 0.0
    """Loop time until which another worker is known to want this host (nothing is kept)."""
    flush: asyncio.TimerHandle | None = None
    """The timer that gives back the kept slots no request took (KEEP_SECONDS)."""

    def __post_init__(self) -> None:
        self.keys = host_keys(self.name, self.prefix)

    @property
    def held(self) -> int:
        """Requests to this host this worker has in flight."""
        return len(self.holders) + self.local

    @property
    def holder_names(self) -> list[str]:
        """Every holder this worker keeps in Redis (in flight or in the pool): the leases to renew."""
        return [holder for holder, _ in self.holders] + [holder for free in self.pool.values() for holder in free]

    def contended(self, now: float) -> bool:
        return now < self.contended_until

    def reuse(self, holder: str, kind: SlotKind, now: float) -> bool:
        """Put a slot given back into the pool if a request here can reuse it (see the module docstring)."""
        if kind.interval or kind.adaptive:
            return False  # its pace or limit is decided in Redis
        contended = self.contended(now)
        free = self.pool.get(kind)
        handed = len(free) if free else 0
        if self.demand[kind] > handed:  # a request here waits for it
            if contended:
                if self.gifts >= HANDOFF_MAX:
                    return False
                self.gifts += 1  # a run of hand-overs counts only while others wait
        elif contended:
            return False
        if free is None:
            free = self.pool[kind] = deque()
        free.append(holder)
        self.wake.set()  # a waiter takes it (a pause is checked by the waiter)
        return True

    def idle(self) -> list[str]:
        """Take out of the pool the slots no request here waits for (to give them back to Redis)."""
        idle = [kind for kind in self.pool if not self.demand[kind]]
        return [holder for kind in idle for holder in self.pool.pop(kind)]

    def take_gift(self, kind: SlotKind) -> str | None:
        """A slot of `kind` from the pool, taken out of it (None if there is none)."""
        free = self.pool.get(kind)
        if not free:
            return None
        holder = free.popleft()
        if not free:
            del self.pool[kind]
        return holder
