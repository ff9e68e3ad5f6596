"""Helpers of the engine's tests: waiting for the target server's counters, fresh keys, fast retry options."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from jobs.engine.values import FetchOptions
from tests.target import Stats, TargetServer

FAST = FetchOptions(timeout=5, retries=2, backoff_base=0.05, backoff_cap=0.2)


async def until(target: TargetServer, predicate: Callable[[Stats], bool], timeout: float = 5.0) -> Stats:
    """Wait (without blocking the loop) until the server's stats match."""
    deadline = time.monotonic() + timeout
    while not predicate(stats := target.stats()):
        assert time.monotonic() < deadline, f"server stats never matched: {stats}"
        await asyncio.sleep(0.01)
    return stats


def key() -> str:
    """A fresh ?key= so per-key server counters start at zero."""
    return f"key={time.monotonic_ns()}"
