"""The worker's monitoring pass, run from its poll loop (jobs/worker/runner.py): no extra daemon.

Each pass (at most every MIN_GAP seconds) takes the due schedule ticks, settles
the monitored jobs that ended (changes, notifications queued) and sends the
due deliveries. Sends run as tasks beside the loop, so a slow receiver never
delays claiming; every step is a short transaction that many workers may run
at once (see schedules.py, settle.py, webhooks.py for why each happens once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
from channels.db import database_sync_to_async
from django.db import DatabaseError

from jobs import conf
from jobs.engine.client import make_client
from jobs.models import Job
from jobs.monitoring import schedules, settle, webhooks
from jobs.monitoring_models import Delivery
from jobs.progress import groups

logger = logging.getLogger(__name__)

MIN_GAP = 0.5
"""Seconds between two passes at least (wake-ups may come much more often)."""
MAX_SENDING = 20
"""Deliveries in flight per worker at most."""


class Ticker:
    """One worker's monitoring: call `maybe_run()` from the loop, `aclose()` when the worker stops."""

    def __init__(self) -> None:
        self._guard = conf.fetch_guard()
        self._client: httpx.AsyncClient | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._last = 0.0

    async def maybe_run(self) -> None:
        """A pass, unless one ran less than MIN_GAP ago; database trouble is logged, the next pass retries."""
        if time.monotonic() - self._last < MIN_GAP:
            return
        self._last = time.monotonic()
        try:
            await self.run_once()
        except DatabaseError:
            logger.exception("Monitoring pass failed; trying again at the next poll")

    async def run_once(self) -> None:
        outcome = await database_sync_to_async(schedules.tick)()
        if outcome.started:
            await groups.wake_workers()
        for run in outcome.runs:
            if run.job is not None:
                await groups.publish_job_update(run.job)
        await database_sync_to_async(settle.settle_finished)()
        room = MAX_SENDING - len(self._sending)
        if room > 0:
            for delivery in await database_sync_to_async(webhooks.take_due)(limit=room):
                task = asyncio.create_task(self._deliver(delivery), name=f"delivery {delivery.pk}")
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)

    async def aclose(self, *, timeout: float = 10.0) -> None:
        """Let in-flight deliveries finish for `timeout` seconds, then cancel them (their lease brings them back)."""
        if self._sending:
            _, pending = await asyncio.wait(set(self._sending), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._client is not None:
            await self._client.aclose()

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            if delivery.channel == Delivery.Channel.EMAIL:
                attempt = await database_sync_to_async(_email_attempt)(delivery)
            else:
                secret = await database_sync_to_async(webhooks.secret_for)(await _owner_id(delivery))
                attempt = await webhooks.post(
                    self._http(), self._guard, url=delivery.target, body=delivery.body.encode(), secret=secret,
                    delivery_id=delivery.pk,
                )  # fmt: skip
            done = await database_sync_to_async(webhooks.record)(delivery, attempt)
            if done.status != Delivery.Status.PENDING or done.attempts == 1:
                logger.info("Delivery %s (%s to %s): %s", done.pk, done.channel, done.target, done.status)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Delivery %s failed unexpectedly; it is tried again once its lease expires", delivery.pk)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = make_client(max_connections=MAX_SENDING, guard=self._guard)
        return self._client


@database_sync_to_async
def _owner_id(delivery: Delivery) -> int:
    return int(Job.objects.filter(pk=delivery.job_id).values_list("owner_id", flat=True).get())


def _email_attempt(delivery: Delivery) -> webhooks.Attempt:
    data = json.loads(delivery.body)
    job = data["job"]
    subject = f"Batchfetch: {job['name'] or job['id']} {job['status']} ({', '.join(data['events'])})"
    lines = [
        f"Job {job['name'] or job['id']} is {job['status']}: {job['succeeded']} succeeded, {job['failed']} failed,"
        f" {job['cancelled']} cancelled of {job['total']}.",
        f"Page: {data['url']}",
    ]
    if data.get("changes"):
        lines.append("Since the previous run: " + ", ".join(f"{kind} {n}" for kind, n in data["changes"].items()))
    return webhooks.send_email(delivery, subject=subject, text="\n".join(lines))
