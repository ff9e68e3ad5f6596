"""Readiness: are the database and Redis reachable, each within a deadline (1 s)?

Used by `GET /readyz` (jobs/web/ops.py) and `runworker --check`. Both checks
run at once; a check that has not answered by the deadline has failed. The
database check runs in a daemon thread of its own: a database that hangs ties
up that thread (until the driver gives up), never the web's thread for sync
code, and never keeps `runworker --check` from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio
import redis.exceptions
from django.conf import settings
from django.db import DatabaseError, connection

TIMEOUT = 1.0
"""Seconds each dependency has to answer."""


@dataclass(frozen=True, slots=True)
class Check:
    """One dependency's answer."""

    ok: bool
    ms: int
    """How long it took (or the deadline, if it did not answer)."""
    error: str = ""


@dataclass(frozen=True, slots=True)
class Readiness:
    checks: dict[str, Check]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks.values())

    @property
    def failed(self) -> list[str]:
        return [name for name, check in self.checks.items() if not check.ok]

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "unavailable",
            "failed": self.failed,
            "checks": {name: asdict(check) for name, check in self.checks.items()},
        }


async def readiness(*, timeout: float = TIMEOUT) -> Readiness:
    """Check the database and Redis at once, each within `timeout` seconds."""
    database, cache = await asyncio.gather(
        _timed(_check_database(), timeout), _timed(_check_redis(settings.REDIS_URL, timeout), timeout)
    )
    return Readiness({"database": database, "redis": cache})


async def _timed(check: Any, timeout: float) -> Check:
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            await check
    except TimeoutError:
        return Check(ok=False, ms=round(timeout * 1000), error=f"no answer within {timeout:g} s")
    except (DatabaseError, redis.exceptions.RedisError, OSError) as exc:
        return Check(ok=False, ms=_ms(started), error=f"{type(exc).__name__}: {exc}"[:300])
    return Check(ok=True, ms=_ms(started))


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


async def _check_database() -> None:
    await _in_daemon_thread(_ping_database)


def _in_daemon_thread(function: Callable[[], None]) -> asyncio.Future[None]:
    """Run `function` in a new daemon thread; the future has its outcome."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def settle(error: Exception | None) -> None:
        if future.done():
            return  # the caller gave up (its deadline passed) and cancelled it
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(None)

    def run() -> None:
        error: Exception | None = None
        try:
            function()
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting task, which decides
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits for the answer any more
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name="readiness-db", daemon=True).start()
    return future


def _ping_database() -> None:
    """SELECT 1 on a connection of this thread, closed (or given back to the pool) afterwards."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()


async def _check_redis(url: str, timeout: float) -> None:
    client = redis.asyncio.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        await client.ping()
    finally:
        await client.aclose()
