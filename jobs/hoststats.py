"""Per-host figures of a job for its stats: requests in flight across the fleet, and the limit that applies.

Read from the Redis state of `jobs.engine.fleetslots` (the hosts a job has
requested are recorded by its workers). Empty when the slots are per worker
(FETCH_SHARED_HOST_SLOTS off) or Redis does not answer: the stats still work.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import redis
import redis.exceptions
from django.conf import settings

from jobs.engine.fleetscripts import PREFIX, host_keys, tag_key
from jobs.models import Job
from jobs.worker.hostlimits import job_tag, shared

logger = logging.getLogger(__name__)

MAX_HOSTS = 20
"""Hosts shown at most (the busiest first)."""
TIMEOUT = 1.0


@functools.lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)


def job_hosts(job: Job) -> list[dict[str, Any]]:
    """[{"host", "in_flight", "limit", "paused_for"}] for the hosts `job` requested, the busiest first.

    `in_flight` counts every worker's requests to the host (of any job);
    `limit` is the adaptive limit for an autothrottle job, else its per_host;
    `paused_for` the seconds left of a Retry-After pause (0 if none).
    """
    if not shared():
        return []
    client = _client(settings.REDIS_URL)
    try:
        hosts = sorted(h.decode() for h in client.smembers(tag_key(job_tag(job.pk), PREFIX)))
        if not hosts:
            return []
        seconds, micros = client.time()
        now = seconds * 1000 + micros // 1000
        pipe = client.pipeline(transaction=False)
        for host in hosts:
            keys = host_keys(host)
            pipe.zcount(keys["hold"], now, "+inf")
            pipe.hmget(keys["state"], ["limit", "pause"])
        replies = pipe.execute()
    except (redis.exceptions.RedisError, OSError):
        logger.warning("Per-host stats of job %s: Redis unreachable", job.pk, exc_info=True)
        return []
    rows = []
    for host, in_flight, (limit, pause) in zip(hosts, replies[::2], replies[1::2], strict=True):
        # An autothrottle limit starts at 1 (fleetscripts.ACQUIRE) until the host's first answer sets it.
        adaptive = min(job.per_host, max(1, math.floor(float(limit or 1))))
        paused_for = max(0.0, (float(pause) - now) / 1000) if pause else 0.0
        rows.append({"host": host, "in_flight": int(in_flight), "limit": adaptive if job.autothrottle else job.per_host,
                     "paused_for": round(paused_for, 1)})  # fmt: skip
    rows.sort(key=lambda row: (-row["in_flight"], row["host"]))
    return rows[:MAX_HOSTS]
