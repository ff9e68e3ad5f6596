"""Asyncio helpers of the worker's tasks: finish an awaitable despite a cancel, cancel tasks and wait for them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def shielded(awaitable: Awaitable[T]) -> T:
    """Await `awaitable` to the end even if the caller is cancelled meanwhile, then re-raise the cancel.

    For final status writes: a stopping worker must not leave a job half-written.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise


async def _cancel_and_wait(*tasks: asyncio.Task[Any]) -> None:
    """Cancel the tasks still running and wait until all have ended; their errors are the caller's business."""
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # mark retrieved: the supervisor already raised what mattered
