"""Listening for worker wake-ups: `listen_for_wakeups` and the care it takes to stop promptly when cancelled.

A wake-up is only a speed-up: workers poll the database anyway. An
unreachable layer is retried with backoff and logged once per outage (the
outage tracker of `groups`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from channels.layers import get_channel_layer

from jobs.progress import groups

logger = logging.getLogger(__name__)

# channels-redis forgets group members after a day; a long-running worker re-joins this often.
GROUP_REFRESH_SECONDS = 3600.0


async def listen_for_wakeups(on_wakeup: Callable[[], None], *, max_backoff: float = 10.0) -> None:
    """Call `on_wakeup()` for every wake-up message, until cancelled.

    Joins WAKEUP_GROUP on a new channel of the layer. When the layer is
    unreachable it retries with backoff (logged once per outage) and calls
    `on_wakeup()` once it is back, since wake-ups sent meanwhile were lost.

    Cancelling it always finishes within STOP_TIMEOUT + LEAVE_TIMEOUT seconds,
    even when the layer loses the cancellation: the layer is used from an inner
    task, which is cancelled again until it stops (see `_stop`).
    """
    layer = get_channel_layer()
    if layer is None:
        return
    channel: str | None = None  # the channel last added to WAKEUP_GROUP (even if the add timed out)

    async def listen() -> None:
        nonlocal channel
        backoff = 0.2
        while True:
            try:
                channel = await layer.new_channel("worker")
                async with asyncio.timeout(groups.SEND_TIMEOUT):
                    await layer.group_add(groups.WAKEUP_GROUP, channel)
                if groups.outage.down:
                    on_wakeup()
                groups.outage.succeeded()
                backoff = 0.2
                await _receive_wakeups(layer, channel, on_wakeup)
            except groups.LAYER_ERRORS as exc:
                groups.outage.failed(exc)
                if channel is not None:
                    await _leave(layer, channel)
                    channel = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, max_backoff)

    task = asyncio.create_task(listen(), name="wake-up listener")
    try:
        await asyncio.shield(task)
    finally:
        # Cancelled (or the listener failed, which only a bug can do): stop it, then leave the group.
        await _stop(task)
        if channel is not None:
            await _leave(layer, channel)


# A cancelled listener task that has not finished this soon is cancelled again.
RECANCEL_AFTER = 0.25
# ...and abandoned (with an error logged) if it still has not finished after this long.
STOP_TIMEOUT = 2.0
# Leaving WAKEUP_GROUP is given this long at most.
LEAVE_TIMEOUT = 1.0


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait until it finishes, for STOP_TIMEOUT seconds at most.

    A single cancel() is not enough: channels-redis receives through redis-py,
    which sends each command under asyncio.wait_for() (redis-py's default
    socket_timeout is 5 s), and on Python < 3.12 wait_for() swallows a
    cancellation that arrives just after the command was written (it returns
    the result instead, python/cpython#86296); the listener then goes on
    receiving for ever. So the task is cancelled again until it is done.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STOP_TIMEOUT
    try:
        while not task.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                logger.error("Wake-up listener still running %.1f s after being cancelled; abandoned", STOP_TIMEOUT)
                return
            task.cancel()
            await asyncio.wait({task}, timeout=min(RECANCEL_AFTER, remaining))
    finally:
        if not task.done():
            task.cancel()  # we were cancelled again while waiting: no more waiting, but stop it anyway


async def _receive_wakeups(layer: Any, channel: str, on_wakeup: Callable[[], None]) -> None:
    while True:
        try:
            async with asyncio.timeout(GROUP_REFRESH_SECONDS):
                message = await layer.receive(channel)
        except TimeoutError:
            async with asyncio.timeout(groups.SEND_TIMEOUT):
                await layer.group_add(groups.WAKEUP_GROUP, channel)
            continue
        if message.get("type") == groups.WORKER_WAKEUP:
            on_wakeup()


async def _leave(layer: Any, channel: str) -> None:
    """Best effort: leave WAKEUP_GROUP, so wake-ups stop going to a channel nobody reads.

    Bounded by waiting, not by cancelling: this also runs in a task that is
    being cancelled, where asyncio.timeout() (on 3.11) and cancellation itself
    (see `_stop`) cannot be relied on.
    """
    leaving = asyncio.ensure_future(layer.group_discard(groups.WAKEUP_GROUP, channel))
    leaving.add_done_callback(_discard_outcome)
    try:
        await asyncio.wait({leaving}, timeout=LEAVE_TIMEOUT)
    finally:
        leaving.cancel()  # no-op once done


def _discard_outcome(task: asyncio.Future[Any]) -> None:
    """Mark a best-effort task's failure as seen (it would be logged as 'never retrieved' otherwise)."""
    if not task.cancelled():
        task.exception()
