"""The worker's per-host limits: shared by the fleet through Redis, or per worker (FETCH_SHARED_HOST_SLOTS off).

The Django side of `jobs.engine.fleetslots`: reads the settings and builds
the Redis client (its own, beside the channel layer's). A job's requests go
through `for_job`, which records the job's hosts for its stats
(jobs/hoststats.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from django.conf import settings

from jobs import conf
from jobs.engine import fleetlink
from jobs.engine.fleetslots import FleetSlots
from jobs.engine.hostslots import HostLimits, HostSlots
from jobs.engine.taggedslots import TaggedSlots

def shared() -> bool:
    """Whether per-host caps hold across workers (FETCH_SHARED_HOST_SLOTS, on by default)."""
    return bool(conf.get("FETCH_SHARED_HOST_SLOTS"))


def job_tag(job_id: object) -> str:
    """The tag under which a job's hosts are recorded."""
    return f"job:{job_id}"


@contextlib.asynccontextmanager
async def host_limits(*, worker_id: str) -> AsyncIterator[HostLimits]:
    """The per-host limits of one worker, for as long as it runs."""
    if not shared():
        yield HostSlots()
        return
    client = fleetlink.redis_client(settings.REDIS_URL)
    lease = float(conf.get("WORKER_LEASE_SECONDS"))
    renew = float(conf.get("WORKER_HEARTBEAT_SECONDS"))
    try:
        async with FleetSlots(client, owner=worker_id, lease=lease, renew_every=renew) as slots:
            yield slots
    finally:
        await client.aclose()


def for_job(hosts: HostLimits, job_id: object) -> HostLimits:
    """`hosts` as one job uses them (fleet-wide slots record the job's hosts, for its stats)."""
    return TaggedSlots(hosts, job_tag(job_id)) if isinstance(hosts, FleetSlots) else hosts
