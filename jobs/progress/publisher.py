"""Channel-layer publishing: job progress, the user's job list, worker wake-ups.

Group names may only hold ASCII letters, digits, '-', '_' and '.', under 100
characters. Messages are at-most-once: pages re-sync from a snapshot, and
workers poll the database, so a message is only ever a speed-up.

Nothing here raises to its caller when the channel layer (Redis) is down: the
outage is logged once when it starts and once when it ends, sends are skipped
for a moment after each failure so callers never pile up on a dead server, and
publishing resumes on its own when Redis is back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Self

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from redis.exceptions import RedisError

from jobs import conf
from jobs.models import Job, Result
from jobs.serializers import job_to_dict, result_to_dict

if TYPE_CHECKING:
    from jobs.queue.resultwrite import FinalRow

logger = logging.getLogger(__name__)

WAKEUP_GROUP = "jobs.wakeup"
JOB_PROGRESS = "job.progress"  # to job_group(): {"type", "job": {...}, "results": [...], "text"}
JOB_UPDATE = "job.update"  # to user_group(): {"type", "job": {...}, "text"}
WORKER_WAKEUP = "worker.wakeup"  # to WAKEUP_GROUP: {"type"}

# A send that takes longer than this counts as an outage (a hung Redis must not stall a worker).
SEND_TIMEOUT = 2.0
# After a failed send, skip sends for this long instead of trying (and failing) once per message.
RETRY_AFTER = 1.0
# A restarted Redis fails a few more sends on connections pooled before the restart: failures this soon
# after a recovery belong to the same outage and are not logged again.
SETTLE_SECONDS = 10.0
# Rows per progress message at most: messages stay small however fast URLs finish. When more
# rows finish between two messages, the oldest are left out (the page loads them from the API).
# 100, like the snapshot a page gets on connect: daphne encodes each message once per watching
# socket: with 500 rows (~30 KB), 200 watchers at 10 messages/s would cost it ~60 MB/s of JSON.
MAX_RESULTS_PER_MESSAGE = 100
# channels-redis forgets group members after a day; a long-running worker re-joins this often.
GROUP_REFRESH_SECONDS = 3600.0
# Errors that mean "the channel layer is unreachable" (TimeoutError is an OSError).
LAYER_ERRORS = (RedisError, OSError)


def job_group(job_id: uuid.UUID | str) -> str:
    return f"job.{uuid.UUID(str(job_id)).hex}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


class _Outage:
    """Tracks whether the channel layer is reachable; logs each outage once, at its start and end.

    Shared by every loop and thread of the process (sync views publish from
    their own threads), hence the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._recovered_at = float("-inf")
        self._quiet = False
        """True while the current failure is an aftershock of an outage already logged."""

    @property
    def down(self) -> bool:
        return self._down_since is not None

    @property
    def settling(self) -> bool:
        """Down, but only as an aftershock of an outage that just ended (see SETTLE_SECONDS)."""
        return self._down_since is not None and self._quiet

    def should_try(self) -> bool:
        """False for RETRY_AFTER seconds after a failure."""
        return time.monotonic() >= self._retry_at

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = now
                self._quiet = now - self._recovered_at < SETTLE_SECONDS
            self._retry_at = now + RETRY_AFTER
            quiet = self._quiet
        if first and quiet:
            logger.debug("Channel layer failed again just after an outage (%s: %s)", type(exc).__name__, exc)
        elif first:
            logger.warning(
                "Channel layer unreachable (%s: %s); live updates and wake-ups are paused, workers keep polling",
                type(exc).__name__,
                exc,
            )

    def succeeded(self) -> None:
        quiet = False
        with self._lock:
            since, self._down_since, self._retry_at = self._down_since, None, 0.0
            if since is not None:
                quiet, self._recovered_at = self._quiet, time.monotonic()
        if since is not None and not quiet:
            logger.warning("Channel layer reachable again after %.1f s; live updates resumed", time.monotonic() - since)


outage = _Outage()


async def group_send(group: str, message: dict[str, Any]) -> bool:
    """Send `message` to `group`; True if it was handed to the layer.

    Never raises for an unreachable layer (see the module docstring); only
    cancellation propagates.
    """
    layer = get_channel_layer()
    if layer is None or not outage.should_try():
        return False
    try:
        async with asyncio.timeout(SEND_TIMEOUT):
            await layer.group_send(group, message)
    except LAYER_ERRORS as exc:
        outage.failed(exc)
        return False
    outage.succeeded()
    return True


def progress_message(job: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """A `job.progress` group message. `text` is what the job's sockets send, encoded here once: a
    consumer forwards it as is instead of encoding the message again for each of its watchers."""
    text = json.dumps({"type": "progress", "job": job, "results": results})
    return {"type": JOB_PROGRESS, "job": job, "results": results, "text": text}


def update_message(job: dict[str, Any]) -> dict[str, Any]:
    """A `job.update` group message (`text`: what the list sockets send, as in `progress_message`)."""
    return {"type": JOB_UPDATE, "job": job, "text": json.dumps({"type": "job", "job": job})}


async def wake_workers() -> None:
    """Tell the workers a job is waiting; an idle one claims it within ~100 ms instead of at its next poll."""
    await group_send(WAKEUP_GROUP, {"type": WORKER_WAKEUP})


async def publish_job_update(job: Job) -> None:
    """Announce a job's new state (after submit or cancel) to its owner's pages.

    A `cancelling` or `pausing` job also wakes the workers: the one running it
    then checks the job's status at once instead of at its next check (<= 0.5 s).
    """
    data = job_to_dict(job)
    await group_send(user_group(job.owner_id), update_message(data))
    await group_send(job_group(job.pk), progress_message(data, []))
    if job.status in (Job.Status.CANCELLING, Job.Status.PAUSING):
        await wake_workers()


def wake_workers_sync() -> None:
    """`wake_workers()` for sync code (views, admin actions, the shell)."""
    async_to_sync(wake_workers)()


def publish_job_update_sync(job: Job) -> None:
    """`publish_job_update()` for sync code (views, admin actions, the shell)."""
    async_to_sync(publish_job_update)(job)


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
        self._job_group = job_group(job.pk)
        self._user_group = user_group(job.owner_id)
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
            async with asyncio.timeout(2 * SEND_TIMEOUT + self._interval):
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
                if sent or not outage.settling:
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
        sent = await group_send(self._job_group, progress_message(job, results))
        if sent:
            self.messages += 1
        return await group_send(self._user_group, update_message(job)) and sent


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
                async with asyncio.timeout(SEND_TIMEOUT):
                    await layer.group_add(WAKEUP_GROUP, channel)
                if outage.down:
                    on_wakeup()
                outage.succeeded()
                backoff = 0.2
                await _receive_wakeups(layer, channel, on_wakeup)
            except LAYER_ERRORS as exc:
                outage.failed(exc)
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
            async with asyncio.timeout(SEND_TIMEOUT):
                await layer.group_add(WAKEUP_GROUP, channel)
            continue
        if message.get("type") == WORKER_WAKEUP:
            on_wakeup()


async def _leave(layer: Any, channel: str) -> None:
    """Best effort: leave WAKEUP_GROUP, so wake-ups stop going to a channel nobody reads.

    Bounded by waiting, not by cancelling: this also runs in a task that is
    being cancelled, where asyncio.timeout() (on 3.11) and cancellation itself
    (see `_stop`) cannot be relied on.
    """
    leaving = asyncio.ensure_future(layer.group_discard(WAKEUP_GROUP, channel))
    leaving.add_done_callback(_discard_outcome)
    try:
        await asyncio.wait({leaving}, timeout=LEAVE_TIMEOUT)
    finally:
        leaving.cancel()  # no-op once done


def _discard_outcome(task: asyncio.Future[Any]) -> None:
    """Mark a best-effort task's failure as seen (it would be logged as 'never retrieved' otherwise)."""
    if not task.cancelled():
        task.exception()
