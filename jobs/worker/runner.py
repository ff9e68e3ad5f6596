"""The worker: claims jobs from the database queue and fetches their URLs.

One process runs one `Worker` on one event loop with one shared HTTP client.
The worker claims jobs while it runs fewer than `max_jobs`; otherwise, and
when the queue is empty, it waits for a channel-layer wake-up (a new job
starts within ~100 ms) or its poll interval (~1 s with jitter: the fallback
when Redis is down, the database being the source of truth). Each claimed job
runs as a `JobRun` (jobrun.py).

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
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from django.db import DatabaseError

from jobs import conf
from jobs.engine.client import make_client
from jobs.engine.hostslots import HostLimits, HostSlots
from jobs.exceptions import ClaimLost
from jobs.monitoring.ticker import Ticker
from jobs.ops import logs, metrics
from jobs.progress import groups, wakeups
from jobs.queue import claims, records
from jobs.queue.fences import Claim
from jobs.worker import dbconn, dbretry, eventloop, hostlimits, housekeeping
from jobs.worker.jobrun import JobRun
from jobs.worker.tasks import _cancel_and_wait, shielded

logger = logging.getLogger(__name__)

SignalHandler = Callable[[int, FrameType | None], Any] | int | None

POLL_JITTER = 0.2
"""Poll intervals vary by +-20%, so workers started together do not query in lockstep."""
ERROR_MAX_CHARS = 4000


def default_worker_id() -> str:
    """host:pid:random, unique across hosts and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


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
        health_file: Path | None = None,
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
        self.health_file = health_file
        """Touched every few seconds while the loop runs (`runworker --check --health-file`)."""
        self.forced = False
        """True once a second signal cut the grace short."""
        self._runs: dict[Any, tuple[JobRun, asyncio.Task[None]]] = {}
        # Events bind to a loop only when first awaited, so creating them here is safe.
        self._stopping = asyncio.Event()
        self._forced = asyncio.Event()
        self._wake = asyncio.Event()
        self._limit = asyncio.Semaphore(concurrency)
        self._client: httpx.AsyncClient | None = None
        # Per-host caps: run() puts the fleet-wide ones (hostlimits) here. The SSRF guard is read once.
        self._hosts: HostLimits = HostSlots()
        self._guard = conf.fetch_guard()
        self._ticker = Ticker()

    # --- lifecycle ---------------------------------------------------------------

    async def run(self) -> None:
        """Serve until stopped (signal or `stop()`), or in batch mode until the queue is empty."""
        with logs.bind(worker_id=self.worker_id):  # every record of this worker (and its tasks) names it
            await self._run()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        previous = self._install_signal_handlers(loop)
        logger.info(
            "Worker %s started (concurrency %d, max jobs %d%s)",
            self.worker_id, self.concurrency, self.max_jobs, ", batch" if self.batch else "",
        )  # fmt: skip
        metrics.worker_gauges.add(self)
        try:
            async with (
                dbconn.persistent_connections(),
                make_client(max_connections=self.concurrency, guard=self._guard) as client,
                hostlimits.host_limits(worker_id=self.worker_id) as hosts,
            ):
                self._client = client
                self._hosts = hosts
                await eventloop.call_startup_hooks(self)
                background = [
                    asyncio.create_task(wakeups.listen_for_wakeups(self._on_wakeup), name="wake-ups"),
                    asyncio.create_task(housekeeping.purge_daily(), name="retention"),
                ]
                if self.health_file is not None:
                    background.append(asyncio.create_task(housekeeping.touch_forever(self.health_file), name="alive"))
                try:
                    await self._serve()
                except asyncio.CancelledError:
                    self.stop(force=True)  # cancelled from outside: no grace, hand the jobs back at once
                    raise
                finally:
                    self._stopping.set()
                    await self._drain()
                    await self._ticker.aclose(timeout=0.0 if self.forced else self.grace)
                    await _cancel_and_wait(*background)
        finally:
            metrics.worker_gauges.remove(self)
            self._restore_signal_handlers(loop, previous)
        logger.info("Worker %s stopped", self.worker_id)

    # --- what the metrics read (from their scrape thread) ------------------------------

    def requests_in_flight(self) -> int:
        return sum(run.in_flight for run, _ in list(self._runs.values()))

    def host_requests_in_flight(self) -> dict[str, int]:
        return self._hosts.snapshot()

    def jobs_running(self) -> int:
        return len(self._runs)

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

    def _start(self, claim: Claim) -> None:
        assert self._client is not None  # set by run()
        run = JobRun(
            claim,
            client=self._client,
            limit=self._limit,
            stopping=self._stopping,
            forced=self._forced,
            grace=self.grace,
            hosts=hostlimits.for_job(self._hosts, claim.job_id),
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
        with logs.bind(job_id=claim.job_id):
            await self._run_job_bound(run, claim)

    async def _run_job_bound(self, run: JobRun, claim: Claim) -> None:
        try:
            await run.execute()
        except ClaimLost as exc:
            metrics.CLAIMS_LOST.inc()
            logger.warning("Job %s: %s; stopped working on it", claim.job_id, exc)
        except dbretry.TRANSIENT_ERRORS:
            # Only when forced to exit during an outage: not the job's fault, so not failed; it comes back.
            logger.warning("Job %s: database unreachable; the job is re-claimed once its lease expires", claim.job_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("Job %s failed", claim.job_id)
            await self._fail(claim, exc)

    async def _fail(self, claim: Claim, exc: Exception) -> None:
        try:
            job = await shielded(records.aleave_job(claim, "done", error=error_summary(exc)))
        except ClaimLost:
            return
        except DatabaseError:
            logger.exception("Could not mark job %s failed; it is retried once its lease expires", claim.job_id)
            return
        await groups.publish_job_update(job)

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
