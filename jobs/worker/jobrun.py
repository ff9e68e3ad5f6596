"""One job's run on a worker: its chunks, fetches, result flushes and status checks, to its final status.

Each claimed job is a `JobRun`, the worker's share of the job (jobs/queue/shares.py): it
claims the job's URLs a chunk at a time and streams them into
`jobs.engine.pipeline.fetch_all`, limited by the share's slots of the job's concurrency
(other workers may share the job) and by one semaphore shared by all jobs of
the worker (`concurrency`, also the size of the client's connection pool).
Results are buffered and written in batches (every 200 ms or 500 results), off
the event loop; progress is published coalesced. A watcher checks the job's
status and the share's slots every 0.5 s (at once on a wake-up) and renews
the lease every WORKER_HEARTBEAT_SECONDS.

Pausing: a `pausing` job starts no new request (its requests pass a
`PauseGate`), lets those in flight finish, records them and is released as
`paused`; resuming queues it again.

Deadline: a job with `deadline_at` (jobs/queue/deadlines.py) runs under
`asyncio.timeout_at` of that moment on this loop; when it passes, the requests
in flight are cancelled, what finished is recorded, and `leave_job` fails the
job, recording every unfinished URL as failed (`deadline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast

import httpx
from django.db import DatabaseError
from django.utils import timezone

from jobs import bodies, conf, requestdata
from jobs.engine.hostslots import HostLimits
from jobs.engine.netguard import Guard
from jobs.engine.pipeline import Item, fetch_all
from jobs.engine.values import FetchResult
from jobs.models import Job
from jobs.progress import publisher
from jobs.queue import claims, deadlines, records, shares
from jobs.queue.fences import Claim
from jobs.queue.records import Ending
from jobs.worker import dbretry
from jobs.worker.options import fetch_options
from jobs.worker.pausegate import PauseGate
from jobs.worker.sharelimit import ShareLimit
from jobs.worker.tasks import _cancel_and_wait, shielded

logger = logging.getLogger(__name__)

T = TypeVar("T")

FLUSH_INTERVAL = 0.2
"""Seconds between two result batches at most."""
FLUSH_SIZE = 500
"""Results per batch at most; a full buffer is flushed at once."""
STATUS_CHECK_INTERVAL = 0.5
"""Seconds between two checks of a running job's status (cancel is honoured within 1 s)."""


class JobRun:
    """One claimed job, from its first request to its final status."""

    def __init__(
        self,
        claim: Claim,
        *,
        client: httpx.AsyncClient,
        limit: asyncio.Semaphore,
        stopping: asyncio.Event,
        forced: asyncio.Event,
        grace: float,
        hosts: HostLimits | None = None,
        guard: Guard | None = None,
        max_slots: int | None = None,
    ) -> None:
        self.claim = claim
        self._max_slots = max_slots
        self._share = ShareLimit(claim.slots)
        self._hosts = hosts
        self._guard = guard
        self.job: Job = claim.job
        self._client = client
        self._limit = limit
        self._stopping = stopping
        self._forced = forced
        self._grace = grace
        self._buffer: list[FetchResult] = []
        self._flush_now = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._check_now = asyncio.Event()
        self._feeding = True
        self._cancel_requested = False
        self._pause_requested = asyncio.Event()
        self._gate = PauseGate(limit)
        self._publisher = publisher.JobPublisher(claim.job)

    @property
    def in_flight(self) -> int:
        """Requests of this job holding a worker slot now (read by the metrics' scrape thread)."""
        return self._gate.in_flight

    def poke(self) -> None:
        """Check the job's status now (a wake-up may announce a cancel)."""
        self._check_now.set()

    async def execute(self) -> None:
        """Run the job to its end: completed, cancelled, or released (worker stopping)."""
        started = time.monotonic()
        job = self.job
        logger.info("Job %s claimed (%d URLs, %d done, concurrency %d)", job.pk, job.total, job.done, job.concurrency)
        async with self._publisher:
            self._publisher.update(job)
            ending: Ending
            if job.status == Job.Status.CANCELLING:
                ending = "cancel"
            elif deadlines.has_passed(job, timezone.now()):
                ending = "deadline"  # e.g. taken over after its worker stopped: nothing is fetched
            elif job.status == Job.Status.PAUSING:
                ending = "pause"  # re-claimed after a crash mid-pause: nothing is in flight
            else:
                ending = await self._fetch()
            job = await shielded(self._conclude(ending))
            self._publisher.update(job)
        elapsed = time.monotonic() - started
        logger.info(
            "Job %s %s after %.1f s: %d succeeded, %d failed, %d cancelled of %d",
            job.pk, job.status, elapsed, job.succeeded, job.failed, job.cancelled, job.total,
        )  # fmt: skip

    async def _fetch(self) -> Ending:
        items = self._items()
        fetch = asyncio.create_task(
            fetch_all(
                self._client,
                items,
                concurrency=self.job.concurrency,
                options=fetch_options(self.job),
                on_result=self._on_result,
                # The gate holds the worker-wide limit while a request is in flight (see pausegate).
                global_limit=cast(asyncio.Semaphore, self._gate),
                hosts=self._hosts,
                guard=self._guard,
                sink=bodies.sink_factory(self.job),
                stop=self._stopping,  # a stopping worker starts no new request, even of items already queued
                job_limit=self._share,  # the share's slots of the job's concurrency, rebalanced by _watch
            ),
            name=f"fetch {self.job.pk}",
        )
        watcher = asyncio.create_task(self._watch(), name=f"watch {self.job.pk}")
        flusher = asyncio.create_task(self._flush_loop(), name=f"flush {self.job.pk}")
        # The job deadline is stored as a wall-clock time, the same for every worker sharing the job.
        clock = asyncio.timeout_at(loop_time_of(self.job.deadline_at))
        try:
            async with clock:
                return await self._supervise(fetch, watcher, flusher)
        except TimeoutError:
            if not clock.expired():
                raise
            logger.info("Job %s: its deadline passed; cancelling its requests", self.job.pk)
            return "deadline"
        finally:
            # Cancelling fetch_all cancels its requests; awaiting it means they have really stopped.
            await _cancel_and_wait(fetch, watcher, flusher)
            await items.aclose()  # fetch_all leaves closing the iterator to us

    async def _supervise(
        self, fetch: asyncio.Task[None], watcher: asyncio.Task[None], flusher: asyncio.Task[None]
    ) -> Ending:
        """Wait until the fetches end, the job is cancelled, or the worker stops (after the grace)."""
        loop = asyncio.get_running_loop()
        stop_wait = asyncio.create_task(self._stopping.wait())
        force_wait = asyncio.create_task(self._forced.wait())
        pause_wait = asyncio.create_task(self._pause_requested.wait())
        drain_wait: asyncio.Task[None] | None = None
        deadline: float | None = None
        try:
            while True:
                waiting: set[asyncio.Task[Any]] = {fetch, watcher, flusher, force_wait}
                if deadline is None:
                    waiting.add(stop_wait)
                waiting.add(pause_wait if drain_wait is None else drain_wait)
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for side in (watcher, flusher):
                    if side in done:
                        side.result()  # raises ClaimLost or a database error
                if self._cancel_requested:
                    return "cancel"
                if fetch in done:
                    fetch.result()  # raises what broke fetch_all
                    if drain_wait is not None:
                        return "pause"
                    # fetch_all also ends early once the worker stops, maybe before stop_wait was seen here.
                    return "stop" if self._stopping.is_set() else "done"
                if drain_wait is not None and drain_wait in done:
                    return "pause"  # in-flight requests finished; the parked ones never started
                if pause_wait in done and drain_wait is None:
                    self._feeding = False
                    self._gate.close()
                    drain_wait = asyncio.create_task(self._gate.drained())
                if force_wait in done or (deadline is not None and loop.time() >= deadline):
                    return "stop"
                if stop_wait in done:
                    self._feeding = False  # no more requests start from our side
                    deadline = loop.time() + self._grace
        finally:
            await _cancel_and_wait(stop_wait, force_wait, pause_wait, *([drain_wait] if drain_wait else []))

    async def _conclude(self, ending: Ending) -> Job:
        """Record what was fetched, then finish the job, or hand it back if the worker is stopping."""
        await self._flush()
        job = await self._retrying(lambda: records.aleave_job(self.claim, ending), "leaving a job")
        if job.status == Job.Status.QUEUED:
            logger.info("Job %s released back to the queue (%d URLs left)", job.pk, job.total - job.done)
        elif job.status == Job.Status.PAUSED:
            logger.info("Job %s paused (%d URLs left)", job.pk, job.total - job.done)
        return job

    def _retrying(self, call: Callable[[], Awaitable[T]], doing: str) -> Awaitable[T]:
        """`call()`, retried while the database is unreachable, until the worker must exit at once."""
        return dbretry.retrying(call, doing=doing, give_up=self._forced)

    # --- the pieces running beside fetch_all ----------------------------------------------

    async def _items(self) -> AsyncGenerator[Item, None]:
        """Pending (position, url) pairs, a claimed chunk at a time, until no chunk is left for this share.

        fetch_all asks for the next item only when its queue has room, so the
        next chunk is claimed while the last one's requests are still in flight.
        A job whose lines override its request yields (position, url, request), the chunk's
        overrides read by the claim's own query; a job of plain lines reads none.
        """
        while self._feeding:
            chunk = await self._retrying(lambda: claims.aclaim_chunk(self.claim), "claiming URLs")
            if chunk is None:
                return
            items: Sequence[Item] = chunk.items
            if self.job.line_requests:
                # Unsealing the lines' secret headers is CPU work: off the event loop.
                specs = await asyncio.to_thread(requestdata.line_specs, self.job, chunk.lines)
                items = [(position, url, specs.get(position)) for position, url in chunk.items]
            for item in items:
                if not self._feeding:
                    return
                yield item

    def _on_result(self, result: FetchResult) -> None:
        self._buffer.append(result)
        if len(self._buffer) >= FLUSH_SIZE:
            self._flush_now.set()

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_INTERVAL):
                    await self._flush_now.wait()
            await self._flush()

    async def _flush(self) -> None:
        """Write the buffered results, FLUSH_SIZE per transaction, and queue them for publishing."""
        async with self._flush_lock:
            self._flush_now.clear()
            while self._buffer:
                batch = self._buffer[:FLUSH_SIZE]
                # Shielded: a write that started is finished, so its rows are never recorded twice or lost.
                # Retried while the database is unreachable; the batch leaves the buffer only once written
                # (a batch written twice, e.g. when the commit's answer was lost, only writes pending rows).
                recorded = await self._retrying(
                    lambda: shielded(records.arecord_results(self.claim, batch)), "recording results"
                )
                del self._buffer[: len(batch)]
                self.job = recorded.job
                self._publisher.update(recorded.job, recorded.results)

    async def _watch(self) -> None:
        """Return once the job is `cancelling` (or ended elsewhere); flag a pause; apply the share's slots;
        renew the lease meanwhile. Raises ClaimLost."""
        loop = asyncio.get_running_loop()
        heartbeat_every = float(conf.get("WORKER_HEARTBEAT_SECONDS"))
        next_heartbeat = loop.time() + heartbeat_every
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STATUS_CHECK_INTERVAL):
                    await self._check_now.wait()
            self._check_now.clear()
            renew = loop.time() >= next_heartbeat
            try:
                check = await shares.acheck_share(
                    self.claim, in_flight=self._share.in_flight, applied=self._share.size,
                    max_slots=self._max_slots, renew=renew,
                )
            except dbretry.TRANSIENT_ERRORS as exc:
                # A restarting database: the lease outlasts a few missed checks (logged once per outage).
                dbretry.outage.failed(exc, "checking a job's status")
                continue
            except DatabaseError:
                logger.warning("Job %s: status check failed; retrying", self.job.pk, exc_info=True)
                continue
            dbretry.outage.succeeded()
            if renew:
                next_heartbeat = loop.time() + heartbeat_every
            self._share.resize(check.slots)
            status = check.status
            if status == Job.Status.CANCELLING or status in Job.TERMINAL:
                logger.info("Job %s: cancel requested; stopping its requests", self.job.pk)
                self._cancel_requested = True
                return
            if status == Job.Status.PAUSING and not self._pause_requested.is_set():
                # Keep watching: a cancel may follow while in-flight requests finish.
                logger.info("Job %s: pause requested; letting in-flight requests finish", self.job.pk)
                self._pause_requested.set()


def loop_time_of(moment: datetime | None) -> float | None:
    """The running loop's time at wall-clock `moment` (None, no deadline, stays None)."""
    if moment is None:
        return None
    return asyncio.get_running_loop().time() + (moment - timezone.now()).total_seconds()
