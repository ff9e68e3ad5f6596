"""Startup hooks for tests (WORKER_STARTUP_HOOKS): they run on a real worker's event loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

BLOCK_SECONDS = 0.3


def block_the_loop(worker: Any) -> None:
    """Schedule a callback that holds the loop for BLOCK_SECONDS: asyncio's debug mode must report it."""
    asyncio.get_running_loop().call_soon(time.sleep, BLOCK_SECONDS)


async def say_hello(worker: Any) -> None:
    """An async hook: awaited before the worker claims a job."""
    await asyncio.sleep(0)
    worker.hello = "from a startup hook"
