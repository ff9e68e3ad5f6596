"""`JobPublisher`: one job's progress, coalesced to PROGRESS_MAX_RATE messages a second, sent from a thread of its own.

Sends go through `groups.group_send`, so an unreachable channel layer is
logged, never raised (see `groups`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Self

from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer

from jobs import conf
from jobs.models import Job, Result
from jobs.progress import groups
from jobs.serializers import job_to_dict, result_to_dict

if TYPE_CHECKING:
    from jobs.queue.resultwrite import FinalRow

# Rows per progress message at most: messages stay small however fast URLs finish. When more
# rows finish between two messages, the oldest are left out (the page loads them from the API).
# 100, like the snapshot a page gets on connect: daphne encodes each message once per watching
# socket: with 500 rows (~30 KB), 200 watchers at 10 messages/s would cost it ~60 MB/s of JSON.
MAX_RESULTS_PER_MESSAGE = 100


class _SenderThread:
    """An event loop in a thread of its own, where `JobPublisher`s send (channels-redis keeps one
    connection pool per loop, so the layer serves both loops).

    On a worker fetching thousands of URLs a second, each turn of the main loop runs
    hundreds of requests' callbacks (~50 ms), and a channels-redis group_send takes three
    Redis round trips, each waiting for the next turn: a message took ~250 ms to send
    (bench/results.md). Here each round trip only waits for the GIL. Started by the first
    publisher, stopped (its connections closed) when the last one closes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def acquire(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._serve, args=(self._loop,), name="progress sender", daemon=True).start()
            self._users += 1
            return self._loop

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users or self._loop is None:
                return
            loop, self._loop = self._loop, None
        loop.call_soon_threadsafe(loop.stop)

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            # Stopped by the last release(): anything left (a send abandoned after its timeout) is cancelled.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()  # channels-redis closes this loop's connections as the loop closes


_sender = _SenderThread()


class JobPublisher:
    """Coalesces one job's progress into at most PROGRESS_MAX_RATE messages per second.

    The worker calls `update()` (sync and cheap) after every recorded batch; a
    background task sends the latest job state with the rows recorded since the
    previous message, to the job's group (`job.progress`) and to the owner's
    group (`job.update`). `aclose()` sends what is left, the final status
    included, at once (not after the pause between two messages), then stops.
    Use as an async context manager.

    With a channels-redis layer, the task runs on `_SenderThread`'s loop, so a
    busy worker loop does not hold messages up; with another layer (the in-memory
    one of tests), on the caller's loop.
    """

    def __init__(self, job: Job, *, max_rate: float | None = None) -> None:
        rate = float(conf.get("PROGRESS_MAX_RATE") if max_rate is None else max_rate)
        self._interval = 1.0 / rate
        self._job_group = groups.job_group(job.pk)
        self._user_group = groups.user_group(job.owner_id)
        self._job: dict[str, Any] | None = None
        self._results: deque[dict[str, Any]] = deque(maxlen=MAX_RESULTS_PER_MESSAGE)
        self._lock = threading.Lock()  # update() and _send() may run on different threads
        self._dirty = asyncio.Event()  # set on the loop that runs _run (see _poke)
        self._final = asyncio.Event()  # set by aclose() (on that loop too): the last state skips the pause
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threaded = False
        self._task: concurrent.futures.Future[None] | asyncio.Task[None] | None = None
        self.messages = 0
        """Progress messages handed to the layer so far."""

    async def __aenter__(self) -> Self:
        if isinstance(get_channel_layer(), RedisChannelLayer):
            self._threaded = True
            self._loop = _sender.acquire()
            self._task = asyncio.run_coroutine_threadsafe(self._run(), self._loop)
        else:
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._run(), name=f"publish {self._job_group}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def update(self, job: Job, results: Iterable[Result | FinalRow] = ()) -> None:
        """Queue the job's current state and newly final rows for the next message."""
        data = job_to_dict(job)
        # Only the rows the next message can hold are converted (a batch can be 500 rows).
        rows = [result_to_dict(result) for result in list(results)[-MAX_RESULTS_PER_MESSAGE:]]
        with self._lock:
            self._job = data
            self._results.extend(rows)
        self._poke()

    def _poke(self, event: asyncio.Event | None = None) -> None:
        """Set `event` (default: dirty) on the loop that runs `_run`."""
        if event is None:
            event = self._dirty
        if self._threaded and self._loop is not None:
            self._loop.call_soon_threadsafe(event.set)
        else:
            event.set()

    async def aclose(self) -> None:
        """Send the last state (within a few seconds at most) and stop."""
        task, self._task = self._task, None
        if task is None:
            return
        self._poke()
        self._poke(self._final)
        waiting = asyncio.wrap_future(task) if isinstance(task, concurrent.futures.Future) else task
        try:
            # Shielded so a cancelled caller does not cut the final message short;
            # bounded so a hung layer cannot hold up the worker.
            async with asyncio.timeout(2 * groups.SEND_TIMEOUT + self._interval):
                await asyncio.shield(waiting)
        except TimeoutError:
            task.cancel()
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            if self._threaded:
                self._loop = None  # later update()s only store (their loop may be closed)
                _sender.release()

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            sent = await self._send()
            # `_final` is set on this loop after the last update()'s `_dirty` (callbacks run in order): a send
            # that ends just as aclose() starts sees that update pending, not a finished publisher.
            if self._final.is_set() and not self._dirty.is_set():
                if sent or not groups.outage.settling:
                    return  # in a real outage pages lose their sockets too, and re-sync when they reconnect
                # A send failed on a connection left over from before a Redis restart, while pages are
                # connected again: the final state must reach them, so try again until aclose() gives up.
                self._dirty.set()
                await asyncio.sleep(self._interval)
                continue
            # The pause that keeps to max_rate; the final state (aclose) goes out without waiting for its end:
            # the job's end is the update watchers wait for most.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._final.wait()

    async def _send(self) -> bool:
        """Send the latest state; True if both groups got it (or there is nothing to send)."""
        with self._lock:
            job, results = self._job, list(self._results)
            self._results.clear()
        if job is None:
            return True
        sent = await groups.group_send(self._job_group, groups.progress_message(job, results))
        if sent:
            self.messages += 1
        return await groups.group_send(self._user_group, groups.update_message(job)) and sent
