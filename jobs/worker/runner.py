"""The worker: claims jobs from the database queue and fetches their URLs.

One process runs one `Worker` on one event loop with one shared HTTP client.
The worker claims jobs while it runs fewer than `max_jobs`; otherwise, and
when the queue is empty, it waits for a channel-layer wake-up (a new job
starts within ~100 ms) or its poll interval (~1 s with jitter: the fallback
when Redis is down, the database being the source of truth).

Each claimed job is a `JobRun`, the worker's share of the job (claims.py): it
claims the job's URLs a chunk at a time and streams them into
`fetcher.fetch_all`, limited by the share's slots of the job's concurrency
(other workers may share the job) and by one semaphore shared by all jobs of
the worker (`concurrency`, also the size of the client's connection pool).
Results are buffered and written in batches (every 200 ms or 500 results), off
the event loop; progress is published coalesced. A watcher checks the job's
status and the share's slots every 0.5 s (at once on a wake-up) and renews
the lease every WORKER_HEARTBEAT_SECONDS.

Pausing: a `pausing` job starts no new request (its requests pass a
`PauseGate`), lets those in flight finish, records them and is released as
`paused`; resuming queues it again.

Stopping: a cancelled job stops starting requests, cancels those in flight,
and only once they have really stopped records the rest as cancelled.
SIGINT/SIGTERM stop claiming and starting requests at once, let in-flight
requests finish for `grace` seconds (10), then cancel them and hand the job
back to the queue; a second signal cuts the grace short. Final status writes
are shielded from cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import signal
import socket
import threading
import time
import traceback
from collections.abc import AsyncGenerator, Awaitable, Callable
from types import FrameType
from typing import Any, TypeVar, cast

import httpx
from django.db import DatabaseError

from jobs import bodies, conf
from jobs.engine import fetcher
from jobs.engine.fetcher import FetchResult
from jobs.engine.netguard import Guard
from jobs.exceptions import ClaimLost
from jobs.models import Job
from jobs.monitoring.ticker import Ticker
from jobs.progress import publisher
from jobs.queue import claims
from jobs.queue.claims import Ending
from jobs.worker import dbconn, dbretry
from jobs.worker.options import fetch_options
from jobs.worker.pausegate import PauseGate
from jobs.worker.sharelimit import ShareLimit

logger = logging.getLogger(__name__)

T = TypeVar("T")
SignalHandler = Callable[[int, FrameType | None], Any] | int | None

FLUSH_INTERVAL = 0.2
"""Seconds between two result batches at most."""
FLUSH_SIZE = 500
"""Results per batch at most; a full buffer is flushed at once."""
STATUS_CHECK_INTERVAL = 0.5
"""Seconds between two checks of a running job's status (cancel is honoured within 1 s)."""
POLL_JITTER = 0.2
"""Poll intervals vary by +-20%, so workers started together do not query in lockstep."""
ERROR_MAX_CHARS = 4000


def default_worker_id() -> str:
    """host:pid:random, unique across hosts and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


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


def error_summary(exc: BaseException) -> str:
    """`Type: message`, then the end of the traceback, for Job.error."""
    head = f"{type(exc).__name__}: {exc}"
    trace = "".join(traceback.format_exception(exc))
    room = ERROR_MAX_CHARS - len(head) - 2
    if len(trace) > room:
        trace = "..." + trace[-max(room - 3, 0) :]
    return f"{head}\n\n{trace}"[:ERROR_MAX_CHARS]


class Worker:
    """Claims jobs and runs up to `max_jobs` of them at once; see the module docstring."""

    def __init__(
        self,
        *,
        concurrency: int = 100,
        max_jobs: int = 4,
        batch: bool = False,
        worker_id: str | None = None,
        grace: float = 10.0,
        poll_interval: float | None = None,
        handle_signals: bool = True,
    ) -> None:
        if concurrency < 1 or max_jobs < 1:
            raise ValueError("concurrency and max_jobs must be at least 1")
        self.worker_id = worker_id or default_worker_id()
        self.concurrency = concurrency
        """In-flight requests at most, over all jobs of this worker."""
        self.max_jobs = max_jobs
        self.batch = batch
        """Exit once the queue is empty and no job is running (for tests and one-off runs)."""
        self.grace = grace
        """Seconds in-flight requests get to finish after SIGINT/SIGTERM."""
        self.poll_interval = float(conf.get("WORKER_POLL_SECONDS") if poll_interval is None else poll_interval)
        self.handle_signals = handle_signals
        self.forced = False
        """True once a second signal cut the grace short."""
        self._runs: dict[Any, tuple[JobRun, asyncio.Task[None]]] = {}
        # Events bind to a loop only when first awaited, so creating them here is safe.
        self._stopping = asyncio.Event()
        self._forced = asyncio.Event()
        self._wake = asyncio.Event()
        self._limit = asyncio.Semaphore(concurrency)
        self._client: httpx.AsyncClient | None = None
        # Per-host caps hold across all jobs of this worker; the SSRF guard is read from the settings once.
        self._hosts = fetcher.HostSlots()
        self._guard = conf.fetch_guard()
        self._ticker = Ticker()

    # --- lifecycle ---------------------------------------------------------------

    async def run(self) -> None:
        """Serve until stopped (signal or `stop()`), or in batch mode until the queue is empty."""
        loop = asyncio.get_running_loop()
        previous = self._install_signal_handlers(loop)
        logger.info(
            "Worker %s started (concurrency %d, max jobs %d%s)",
            self.worker_id, self.concurrency, self.max_jobs, ", batch" if self.batch else "",
        )  # fmt: skip
        try:
            async with (
                dbconn.persistent_connections(),
                fetcher.make_client(max_connections=self.concurrency, guard=self._guard) as client,
            ):
                self._client = client
                listener = asyncio.create_task(publisher.listen_for_wakeups(self._on_wakeup), name="wake-ups")
                try:
                    await self._serve()
                except asyncio.CancelledError:
                    self.stop(force=True)  # cancelled from outside: no grace, hand the jobs back at once
                    raise
                finally:
                    self._stopping.set()
                    await self._drain()
                    await self._ticker.aclose(timeout=0.0 if self.forced else self.grace)
                    listener.cancel()
                    await asyncio.wait({listener})
        finally:
            self._restore_signal_handlers(loop, previous)
        logger.info("Worker %s stopped", self.worker_id)

    def stop(self, *, force: bool = False) -> None:
        """Stop claiming, let in-flight requests finish for `grace` seconds (none if `force`), release the jobs."""
        if force:
            self.forced = True
            self._forced.set()
        self._stopping.set()
        self._wake.set()

    async def _serve(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            await self._ticker.maybe_run()  # due schedule ticks, finished monitored jobs, webhooks
            await self._fill()
            if self.batch and not self._runs:
                return  # the queue is empty and nothing runs
            if self._stopping.is_set():
                return
            interval = self.poll_interval * random.uniform(1 - POLL_JITTER, 1 + POLL_JITTER)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()

    async def _fill(self) -> None:
        """Claim jobs until `max_jobs` run or the queue is empty."""
        while len(self._runs) < self.max_jobs and not self._stopping.is_set():
            try:
                claim = await claims.aclaim_job(self.worker_id, max_slots=self.concurrency, exclude=set(self._runs))
            except dbretry.TRANSIENT_ERRORS as exc:
                dbretry.outage.failed(exc, "claiming a job")  # logged once per outage; the next poll retries
                return
            except DatabaseError:
                logger.exception("Claiming a job failed; trying again at the next poll")
                return
            dbretry.outage.succeeded()
            if claim is None:
                return
            self._start(claim)

    def _start(self, claim: claims.Claim) -> None:
        assert self._client is not None  # set by run()
        run = JobRun(
            claim,
            client=self._client,
            limit=self._limit,
            stopping=self._stopping,
            forced=self._forced,
            grace=self.grace,
            hosts=self._hosts,
            guard=self._guard,
            max_slots=self.concurrency,
        )
        task = asyncio.create_task(self._run_job(run), name=f"job {claim.job_id}")
        self._runs[claim.job_id] = (run, task)

        def done(_: asyncio.Task[None]) -> None:
            self._runs.pop(claim.job_id, None)
            self._wake.set()  # a slot is free: claim the next job now

        task.add_done_callback(done)

    async def _run_job(self, run: JobRun) -> None:
        """The per-job boundary: whatever goes wrong with one job fails that job, not the worker."""
        claim = run.claim
        try:
            await run.execute()
        except ClaimLost as exc:
            logger.warning("Job %s: %s; stopped working on it", claim.job_id, exc)
        except dbretry.TRANSIENT_ERRORS:
            # Only when forced to exit during an outage: not the job's fault, so not failed; it comes back.
            logger.warning("Job %s: database unreachable; the job is re-claimed once its lease expires", claim.job_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("Job %s failed", claim.job_id)
            await self._fail(claim, exc)

    async def _fail(self, claim: claims.Claim, exc: Exception) -> None:
        try:
            job = await shielded(claims.aleave_job(claim, "done", error=error_summary(exc)))
        except ClaimLost:
            return
        except DatabaseError:
            logger.exception("Could not mark job %s failed; it is retried once its lease expires", claim.job_id)
            return
        await publisher.publish_job_update(job)

    async def _drain(self) -> None:
        """Wait for the running jobs to stop (they watch `_stopping`)."""
        while self._runs:
            await asyncio.wait({task for _, task in self._runs.values()})

    def _on_wakeup(self) -> None:
        self._wake.set()
        for run, _ in self._runs.values():
            run.poke()

    # --- signals -------------------------------------------------------------------

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> dict[int, SignalHandler]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, SignalHandler] = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.getsignal(sig)
            loop.add_signal_handler(sig, self._on_signal, sig)
        return previous

    def _restore_signal_handlers(self, loop: asyncio.AbstractEventLoop, previous: dict[int, SignalHandler]) -> None:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if not self._stopping.is_set():
            logger.warning(
                "%s: stopping; in-flight requests get %.1f s, then running jobs go back to the queue"
                " (signal again to stop at once)", name, self.grace,
            )  # fmt: skip
            self.stop()
        else:
            logger.warning("%s again: stopping at once", name)
            self.stop(force=True)


class JobRun:
    """One claimed job, from its first request to its final status."""

    def __init__(
        self,
        claim: claims.Claim,
        *,
        client: httpx.AsyncClient,
        limit: asyncio.Semaphore,
        stopping: asyncio.Event,
        forced: asyncio.Event,
        grace: float,
        hosts: fetcher.HostSlots | None = None,
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
            fetcher.fetch_all(
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
        try:
            return await self._supervise(fetch, watcher, flusher)
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
        job = await self._retrying(lambda: claims.aleave_job(self.claim, ending), "leaving a job")
        if job.status == Job.Status.QUEUED:
            logger.info("Job %s released back to the queue (%d URLs left)", job.pk, job.total - job.done)
        elif job.status == Job.Status.PAUSED:
            logger.info("Job %s paused (%d URLs left)", job.pk, job.total - job.done)
        return job

    def _retrying(self, call: Callable[[], Awaitable[T]], doing: str) -> Awaitable[T]:
        """`call()`, retried while the database is unreachable, until the worker must exit at once."""
        return dbretry.retrying(call, doing=doing, give_up=self._forced)

    # --- the pieces running beside fetch_all ----------------------------------------------

    async def _items(self) -> AsyncGenerator[tuple[int, str], None]:
        """Pending (position, url) pairs, a claimed chunk at a time, until no chunk is left for this share.

        fetch_all asks for the next item only when its queue has room, so the
        next chunk is claimed while the last one's requests are still in flight.
        """
        while self._feeding:
            chunk = await self._retrying(lambda: claims.aclaim_chunk(self.claim), "claiming URLs")
            if chunk is None:
                return
            for item in chunk.items:
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
                    lambda: shielded(claims.arecord_results(self.claim, batch)), "recording results"
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
                check = await claims.acheck_share(
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


async def _cancel_and_wait(*tasks: asyncio.Task[Any]) -> None:
    """Cancel the tasks still running and wait until all have ended; their errors are the caller's business."""
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # mark retrieved: the supervisor already raised what mattered
