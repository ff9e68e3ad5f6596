"""Riding out database outages: retry connection-level errors with backoff, log each outage once.

A restarting PostgreSQL, a dropped connection or a busy SQLite file are
transient: the worker keeps what it has (buffered results, its place in the
job) and retries until the database answers again, instead of failing the job
or crash-looping. Only errors that say "the database is unreachable right now"
are retried (`OperationalError`, `InterfaceError`); a bad query or a broken
constraint is a bug and still fails the job.

A broken connection needs no special handling: `database_sync_to_async`
closes unusable connections before and after each call, so the next attempt
connects afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError

logger = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_ERRORS = (OperationalError, InterfaceError)
"""Errors that mean "the database is unreachable or busy right now"."""
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0


class DatabaseOutage:
    """Whether the database answers, shared by the whole process; logs an outage when it starts and ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down_since: float | None = None

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, exc: BaseException, doing: str) -> None:
        with self._lock:
            first, self._down_since = self._down_since is None, self._down_since or time.monotonic()
        if first:
            logger.warning(
                "Database unreachable while %s (%s: %s); retrying with backoff, results are kept meanwhile",
                doing, type(exc).__name__, " ".join(str(exc).split()),
            )  # fmt: skip

    def succeeded(self) -> None:
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            logger.warning("Database reachable again after %.1f s", time.monotonic() - since)


outage = DatabaseOutage()


async def retrying(
    call: Callable[[], Awaitable[T]], *, doing: str, give_up: asyncio.Event | None = None
) -> T:
    """Await `call()` until it does not fail with a transient database error; return its result.

    Backs off exponentially (with jitter, up to MAX_BACKOFF seconds) between
    attempts. Once `give_up` is set (the worker must exit now), the next
    transient error is raised instead of retried. Cancellation propagates.
    """
    backoff = FIRST_BACKOFF
    while True:
        try:
            result = await call()
        except TRANSIENT_ERRORS as exc:
            outage.failed(exc, doing)
            if give_up is not None and give_up.is_set():
                raise
            await _pause(backoff * random.uniform(0.5, 1.0), give_up)
            backoff = min(backoff * 2, MAX_BACKOFF)
            continue
        outage.succeeded()
        return result


async def _pause(seconds: float, give_up: asyncio.Event | None) -> None:
    """Sleep `seconds`, or less if `give_up` gets set meanwhile."""
    if give_up is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await give_up.wait()
