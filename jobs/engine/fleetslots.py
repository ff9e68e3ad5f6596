"""Per-host slots, pace and adaptive limit shared by every worker through Redis (pure asyncio + redis.asyncio).

`FleetSlots` has the interface of `HostSlots` (`acquire`/`release`/`in_flight`,
plus `observe` for what a response says), but its caps hold across every
worker process and job: `per_host` requests in flight to one host (name and
port), `per_host_rate` / `host_delay` spacing between their starts, and the
autothrottle limit. The state lives in Redis (the scripts and keys are in
fleetscripts.py), each change one atomic Lua script:

- **Slots are leased.** A holder is a member of the host's sorted set, scored by
  its lease expiry; `acquire` drops expired holders first, so a SIGKILLed
  worker's slots come back within the lease and are never counted twice. The
  worker renews the leases of its holders every `renew_every` seconds (its
  heartbeat).
- **Waiters are woken, not polling.** In a worker only the first waiter of a
  host asks Redis (a FIFO lock); when the host is full it registers as waiting
  (and says so on the wake-up channel) and sleeps until a release publishes
  the host on that pub/sub channel (or the host's pause ends), with a bounded
  fallback re-check (`recheck`, 0.5 s) in case a wake-up was lost.
- **Slots are reused in the worker** (fleethost.py): a slot given back stays
  held and goes to the next request here of the same kind (no pace, no
  autothrottle) without a round trip: handed over to a waiting request, or
  kept for KEEP_SECONDS when none waits and no other worker has said it waits
  for the host. While others wait, at most HANDOFF_MAX hand-overs run in a
  row, then a slot goes back to Redis and this worker lets them ask first
  (YIELD_SECONDS). (Two round trips per request measured +50 % time and twice
  the CPU per URL against per-worker slots; reused, the bench cell is within
  ~10 %.) A Retry-After pause is published to every worker, so no reuse runs
  through it.
- **Rate** is a GCRA with a burst of one, reserved inside the acquire script:
  the request waits (holding its slot, like `HostSlots`' delay) until
  `max(1 / rate, host_delay)` after the previous start to that host. Written
  here rather than with the `limits` library: `limits` answers only "allowed
  now or not" for integer "N per period" items, so a waiter would poll (and a
  rate of 0.3/s becomes a burst of 3 per 10 s); it also costs a second round
  trip per request on top of the slot (bench/ratelimit.py measures both).
- **Autothrottle** (a job's `autothrottle`): the host's concurrency limit `L`,
  shared in Redis, starts at 1 and is bounded to 1..per_host. After each
  response: a 429 or 503 halves it; otherwise its latency is compared with the
  host's latency floor `base` (the lowest latency seen, drifting up by 1 % of
  the gap per response so a host that became slower for good is re-learnt):
  at most 2 × base + 10 ms grows L by 1/L (about +1 per round trip of L
  requests, as TCP's congestion avoidance), slower shrinks it by 10 %. A
  request starts only while fewer than floor(L) are in flight fleet-wide.
- **Retry-After** on a 429/503 (any job) pauses the host for every worker: no
  request to it starts until then (capped at the job's retry_after_cap).

**Redis outage**: an acquire that cannot reach Redis falls back to the
per-worker `HostSlots` (so never more than `per_host` per worker), logged once;
a probe pings Redis every second and global caps resume when it answers (logged
too; fleetlink.py holds the client, its bounded calls and that state). Slots held
in Redis when it went away expire with their lease.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from typing import Self

import redis.asyncio as aioredis

from jobs.engine import fleetscripts
from jobs.engine.fleetlink import CALL_TIMEOUT, REDIS_ERRORS, FleetLink
from jobs.engine.fleethost import CONTENDED_SECONDS, HANDOFF_MAX, KEEP_SECONDS, FleetHost, SlotKind
from jobs.engine.fleetscripts import PREFIX, wake_channel
from jobs.engine.hostslots import HostSlots


RECHECK = 0.5
"""Seconds a waiter sleeps at most without a wake-up before asking Redis again."""
YIELD_SECONDS = 0.01
"""How long a worker that yielded a slot lets the waiting workers ask first."""
PROBE_INTERVAL = 1.0
"""Seconds between two pings while Redis is unreachable."""


class FleetSlots:
    """Per-host caps held across every worker through Redis; see the module docstring.

    Use as an async context manager (it runs the wake-up listener and the lease
    renewal): `async with FleetSlots(client, owner=worker_id, lease=30) as hosts:`.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        owner: str,
        lease: float,
        renew_every: float | None = None,
        fallback: HostSlots | None = None,
        prefix: str = PREFIX,
        recheck: float = RECHECK,
        timeout: float = CALL_TIMEOUT,
    ) -> None:
        self.link = FleetLink(client, timeout=timeout)
        self._owner = f"{owner}:{secrets.token_hex(3)}"
        self._lease_ms = max(1, round(lease * 1000))
        self._renew_every = renew_every if renew_every is not None else lease / 3
        self._fallback = fallback or HostSlots()
        self._prefix = prefix
        self._channel = wake_channel(prefix)
        self._recheck = recheck
        self._hosts: dict[str, FleetHost] = {}
        self._ids = itertools.count()
        self._background: list[asyncio.Task[None]] = []
        self._acquire = client.register_script(fleetscripts.ACQUIRE)
        self._release = client.register_script(fleetscripts.RELEASE)
        self._renew = client.register_script(fleetscripts.RENEW)
        self._observe = client.register_script(fleetscripts.OBSERVE)

    @property
    def redis(self) -> aioredis.Redis:
        return self.link.redis

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def degraded(self) -> bool:
        """True while Redis is unreachable and the per-worker caps apply."""
        return self.link.degraded

    async def __aenter__(self) -> Self:
        self._background = [
            asyncio.create_task(self._listen(), name="host-slot wake-ups"),
            asyncio.create_task(self._renew_loop(), name="host-slot leases"),
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for state in self._hosts.values():
            if state.flush is not None:
                state.flush.cancel()
                state.flush = None
            self._give_back_idle(state)
        for task in self._background:
            task.cancel()
        pending = [*self._background, *self.link.pending]
        if pending:
            await asyncio.wait(pending, timeout=5)

    async def settle(self) -> None:
        """Wait for the bookkeeping sent in the background so far (releases, observations) to reach Redis."""
        await self.link.settle()

    def in_flight(self, host: str) -> int:
        """Requests to `host` this worker has in flight (its share of the fleet's)."""
        state = self._hosts.get(host)
        return state.held if state else 0

    def snapshot(self) -> dict[str, int]:
        """This worker's requests in flight, per host that has any. Safe to call from another thread (metrics)."""
        return {host: n for host, state in list(self._hosts.items()) if (n := state.held)}

    async def acquire(
        self, host: str, *, limit: int, delay: float = 0.0, rate: float | None = None, adaptive: bool = False
    ) -> None:
        """Wait for one of `limit` fleet-wide slots of `host` and its pace; pair every return with `release(host)`."""
        interval = max(delay, 1 / rate if rate else 0.0)
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts[host] = FleetHost(host, self._prefix)
        state.users += 1
        try:
            pace = await self._take(state, SlotKind(limit, interval, adaptive))
        except BaseException:
            state.users -= 1
            self._forget_if_idle(host, state)
            raise
        if pace > 0:
            try:
                await asyncio.sleep(pace)
            except BaseException:
                self.release(host)
                raise

    async def _take(self, state: FleetHost, kind: SlotKind) -> float:
        """Take a slot, in Redis or (Redis unreachable) in the fallback; return the pace still to wait."""
        if not self.link.degraded:
            try:
                return await self._acquire_fleet(state, kind)
            except REDIS_ERRORS as exc:
                self.link.degrade(exc)
        # Fleet slots still in flight here hold per-worker slots now, so the per-worker cap holds across the switch.
        for _ in state.holders:
            self._fallback.occupy(state.name)
        state.local += len(state.holders)
        state.holders.clear()  # their leases run out in Redis, as do the pool's
        state.pool.clear()
        if (pause := state.paused_until - asyncio.get_running_loop().time()) > 0:
            await asyncio.sleep(pause)
        await self._fallback.acquire(state.name, limit=kind.limit, delay=kind.interval)  # paces by itself
        state.local += 1
        return 0.0

    def release(self, host: str) -> None:
        """Give back a slot taken with `acquire` (Redis is told in the background)."""
        state = self._hosts[host]
        if state.local:
            # Fallback slots go first: a fleet holder left in Redis still counts a request in flight.
            state.local -= 1
            self._fallback.release(host)
        else:
            holder, kind = state.holders.pop()
            loop = asyncio.get_running_loop()
            if self.link.degraded:
                pass  # its lease runs out in Redis
            elif state.reuse(holder, kind, loop.time()):  # handed over or kept here: no round trip (fleethost.py)
                if state.flush is None:
                    state.flush = loop.call_later(KEEP_SECONDS, self._flush, state)
            else:
                yielding = state.gifts >= HANDOFF_MAX  # the hand-overs in a row are used up: others go first
                state.gifts = 0
                self.link.spawn(self._release_fleet(state, holder, yielding=yielding))
        state.users -= 1
        self._forget_if_idle(host, state)

    def observe(
        self, host: str, *, status: int, latency: float, retry_after: float = 0.0, per_host: int, adaptive: bool
    ) -> None:
        """What one response to `host` says: its status, its latency (s), the Retry-After (s) to honour."""
        if retry_after > 0:
            state = self._hosts.get(host)
            if state is not None:
                loop_time = asyncio.get_running_loop().time()
                state.paused_until = max(state.paused_until, loop_time + retry_after)
        if self.link.degraded or not (adaptive or retry_after > 0):
            return
        keys = fleetscripts.host_keys(host, self._prefix)
        args = [
            round(latency * 1000, 1),
            status,
            round(retry_after * 1000),
            per_host,
            int(adaptive),
            self._channel,
            host,
        ]
        self.link.spawn(self.link.call(self._observe(keys=[keys["state"], keys["wait"]], args=args)))

    # --- Redis ------------------------------------------------------------------------

    async def _acquire_fleet(self, state: FleetHost, kind: SlotKind) -> float:
        """Take a slot in Redis, or one handed over by a release here (waiting in turn); return the pace to wait."""
        loop = asyncio.get_running_loop()
        if state.pool and state.paused_until <= loop.time() and (gift := state.take_gift(kind)) is not None:
            # A slot free here: taken without queueing behind the asker (or its requests would form a convoy,
            # each waking the next, one loop turn apiece, for as long as requests keep coming).
            state.holders.append((gift, kind))
            return 0.0
        state.demand[kind] += 1
        try:
            async with state.lock:
                while True:
                    if (local_pause := state.paused_until - loop.time()) > 0:
                        await asyncio.sleep(local_pause)
                    if (gift := state.take_gift(kind)) is not None:
                        state.holders.append((gift, kind))
                        return 0.0
                    if (defer := state.defer_until - loop.time()) > 0:
                        await asyncio.sleep(defer)
                    timeout = self._recheck
                    # Ask at least every recheck / 2 even when full: that refreshes our place among the
                    # waiters in Redis (kept for 2 × recheck), so releases elsewhere keep waking us.
                    if not state.full or loop.time() - state.asked_at > self._recheck / 2:
                        state.wake.clear()  # before asking: a release published meanwhile is not missed
                        state.asked_at = loop.time()
                        granted, wait_ms = await self._ask(state, kind)
                        if granted:
                            return int(wait_ms) / 1000
                        if wait_ms > 0:
                            timeout = int(wait_ms) / 1000  # the host is paused
                        elif state.wake.is_set():
                            continue  # a release came while we asked: ask again
                        else:
                            state.full = True  # no need to ask again before a wake-up or the re-check
                    else:
                        state.wake.clear()  # only a hand-over already taken can have set it
                    await self._wait(state, timeout)
        except BaseException:
            if state.demand[kind] == 1:  # the last waiter of its kind: what was handed over goes back
                while (gift := state.take_gift(kind)) is not None:
                    self.link.spawn(self._release_fleet(state, gift))
            raise
        finally:
            state.demand[kind] -= 1

    async def _ask(self, state: FleetHost, kind: SlotKind) -> tuple[int, int]:
        """One acquire script: (1, pace ms) with the slot recorded as ours, or (0, pause ms or -1)."""
        limit, interval, adaptive = kind
        keys = state.keys
        holder = f"{self._owner}:{next(self._ids)}"
        args = [holder, self._owner, limit, self._lease_ms, round(interval * 1000, 3), int(adaptive)]
        args += [round(self._recheck * 2000), self._channel, state.name]
        try:
            granted, wait_ms = await self.link.call(
                self._acquire(keys=[keys["hold"], keys["wait"], keys["pace"], keys["state"]], args=args)
            )
        except asyncio.CancelledError:
            # The script may have run: give the holder back, whether it exists or not.
            self.link.spawn(self._release_fleet(state, holder))
            raise
        if granted:
            state.holders.append((holder, kind))
        return int(granted), int(wait_ms)

    async def _wait(self, state: FleetHost, timeout: float) -> None:
        """Sleep until a wake-up (a release or hand-over here, a release elsewhere) or `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                await state.wake.wait()
        except TimeoutError:
            state.full = False  # the bounded fallback: ask Redis again

    async def _release_fleet(self, state: FleetHost, holder: str, *, yielding: bool = False) -> None:
        """Give `holder` back in Redis. `yielding`: after HANDOFF_MAX hand-overs, let other workers go first."""
        keys = state.keys
        try:
            _, others = await self.link.call(
                self._release(keys=[keys["hold"], keys["wait"]], args=[holder, self._channel, state.name, self._owner])
            )
        except REDIS_ERRORS as exc:
            self.link.degrade(exc)  # the holder's lease runs out in Redis
            return
        if yielding and others:
            # Their wake-up is on its way: our waiter asks a moment later, so one of them gets this slot.
            state.defer_until = asyncio.get_running_loop().time() + YIELD_SECONDS
        elif state.demand.total():
            # Our own waiter asks at once (now that the slot is free in Redis), without waiting for the pub/sub.
            state.full = False
            state.wake.set()

    async def _listen(self) -> None:
        """Wake this worker's waiting hosts when a release is published; reconnect after an outage."""
        while True:
            try:
                async with self.link.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await self.link.call(pubsub.subscribe(self._channel))
                    while True:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is None:
                            continue
                        self._on_message(message["data"])
            except REDIS_ERRORS:
                await asyncio.sleep(PROBE_INTERVAL)  # waiters re-check every `recheck` meanwhile

    def _on_message(self, data: bytes | str) -> None:
        """A release ("host") wakes the host's waiter; a pause ("host TAB ms") pauses the host here too;
        another worker waiting ("host TAB TAB waiter") ends the keeping of its slots here."""
        text = data.decode() if isinstance(data, bytes) else str(data)
        host, _, news = text.partition("\t")
        pause_ms, _, waiter = news.partition("\t")
        state = self._hosts.get(host)
        if state is None:
            return
        if waiter:
            if waiter != self._owner:
                state.contended_until = asyncio.get_running_loop().time() + CONTENDED_SECONDS
                self._give_back_idle(state)
            return
        if pause_ms:
            until = asyncio.get_running_loop().time() + float(pause_ms) / 1000
            state.paused_until = max(state.paused_until, until)
        state.full = False
        state.wake.set()

    async def _renew_loop(self) -> None:
        """Renew the leases of the slots this worker holds, every `renew_every`; probe Redis while it is away."""
        while True:
            await asyncio.sleep(PROBE_INTERVAL if self.link.degraded else self._renew_every)
            try:
                if self.link.degraded:
                    await self.link.call(self.link.redis.ping())
                    self.link.restore()
                for state in list(self._hosts.values()):
                    if names := state.holder_names:
                        await self.link.call(self._renew(keys=[state.keys["hold"]], args=[self._lease_ms, *names]))
            except REDIS_ERRORS as exc:
                self.link.degrade(exc)

    def _flush(self, state: FleetHost) -> None:
        """KEEP_SECONDS after a slot was kept: give back those no request here took."""
        state.flush = None
        self._give_back_idle(state)
        self._forget_if_idle(state.name, state)

    def _give_back_idle(self, state: FleetHost) -> None:
        for holder in state.idle():
            self.link.spawn(self._release_fleet(state, holder))

    def _forget_if_idle(self, host: str, state: FleetHost) -> None:
        if state.users or state.pool or self._hosts.get(host) is not state:
            return
        if state.paused_until > asyncio.get_running_loop().time():
            return  # kept for its pause; forgotten after a later request
        del self._hosts[host]
