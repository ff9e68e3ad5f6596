"""What a worker does beside its jobs: prove it is alive, purge old jobs daily, serve its metrics.

* Liveness file (`runworker --health-file PATH`): touched from the event loop
  every TOUCH_SECONDS, so a fresh mtime means the loop turns; `runworker
  --check --health-file PATH` fails once it is older than STALE_SECONDS.
* Retention (JOBS_RETENTION_DAYS): the purge runs at start, then every
  PURGE_SECONDS, in a thread of its own (it is database work in short
  transactions; the loop keeps fetching). With several workers each runs it:
  they delete the same finished jobs, which is harmless (a second pass finds
  nothing).
* Metrics (`runworker --metrics-port N`): prometheus_client's HTTP server in a
  daemon thread serving the process's default registry, so it answers however
  busy the loop is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from asgiref.sync import sync_to_async
from django.db import connection
from prometheus_client import start_http_server

from jobs.ops import retention

logger = logging.getLogger(__name__)

TOUCH_SECONDS = 5.0
STALE_SECONDS = 30.0
PURGE_SECONDS = 24 * 3600.0


async def touch_forever(path: Path) -> None:
    """Update `path`'s mtime every TOUCH_SECONDS until cancelled."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        path.touch()
        await asyncio.sleep(TOUCH_SECONDS)


def liveness_problem(path: Path, *, now: float | None = None) -> str | None:
    """Why the worker behind `path` does not look alive, or None if it does."""
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:
        return f"{path} does not exist: no worker with --health-file {path} has started"
    if age > STALE_SECONDS:
        return f"{path} was last touched {age:.0f} s ago (more than {STALE_SECONDS:g} s): the worker's loop is stuck"
    return None


async def purge_daily() -> None:
    """Run the retention purge now and every PURGE_SECONDS, until cancelled (only if JOBS_RETENTION_DAYS is set)."""
    while retention.retention_days() is not None:
        try:
            await sync_to_async(_purge_in_thread, thread_sensitive=False)()
        except Exception:  # a boundary like a job's: the worker goes on, the next day's run tries again
            logger.exception("Retention purge failed; trying again in %g s", PURGE_SECONDS)
        await asyncio.sleep(PURGE_SECONDS)


def _purge_in_thread() -> None:
    try:
        retention.purge_expired()
    finally:
        connection.close()  # this thread's connection: not kept between two daily runs


@contextlib.contextmanager
def metrics_server(port: int | None, addr: str) -> Iterator[None]:
    """Serve the default registry on addr:port while the block runs (nothing if `port` is None)."""
    if port is None:
        yield
        return
    server, thread = start_http_server(port, addr=addr)
    logger.info("Metrics on http://%s:%d/metrics (pid %d)", addr, server.server_port, os.getpid())
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
