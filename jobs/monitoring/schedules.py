"""Schedules: storing them, their next tick, and the tick every worker runs from its loop.

Exactly one job per due tick, however many workers tick at once: a worker
takes a tick by a conditional UPDATE of the schedule's `next_run_at` (from the
value it read to the next tick); only one UPDATE can match, the others change
no row and move on. PostgreSQL re-checks the WHERE of a blocked UPDATE after
the winner commits; SQLite runs one writing transaction at a time. The unique
(schedule, due_at) of ScheduleRun is a second guard.

Missed ticks run once: the next tick is computed from *now*, so a schedule
that was due five times while every worker was down runs once when one
starts, not five times. A tick while the previous run of the schedule is
still going is recorded as `skipped` and starts nothing.
"""

from __future__ import annotations

import math
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cronsim import CronSim
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from jobs.models import Job
from jobs.monitoring.inputs import ScheduleSpec
from jobs.monitoring_models import JobMonitor, Schedule, ScheduleRun
from jobs.queue.control import enqueue_job
from jobs.submission import validation

TICK_BATCH = 50
"""Due schedules one tick pass looks at, at most (the rest wait for the next pass, a second later)."""


def next_tick(schedule: Schedule, *, after: datetime) -> datetime:
    """The first tick of `schedule` strictly after `after` (aware, UTC).

    Interval ticks stay on the grid the first tick set (next_run_at + k·interval),
    so a late worker does not make the schedule drift; cron ticks follow the
    expression in the schedule's time zone (cronsim handles DST).
    """
    if schedule.cron:
        local = after.astimezone(zoneinfo.ZoneInfo(schedule.timezone))
        return next(CronSim(schedule.cron, local)).astimezone(UTC)
    assert schedule.interval
    step = timedelta(seconds=schedule.interval)
    anchor = schedule.next_run_at
    if anchor is None:
        return after + step
    if anchor > after:
        return anchor
    periods = math.floor((after - anchor) / step) + 1
    return anchor + periods * step


def apply_spec(schedule: Schedule, spec: ScheduleSpec) -> None:
    """Copy a validated spec onto `schedule` (not saved), and set its next tick if when it runs changed."""
    timing_changed = (schedule.cron, schedule.interval, schedule.timezone, schedule.enabled) != (
        spec.cron, spec.interval, spec.timezone, spec.enabled,
    )  # fmt: skip
    schedule.name = spec.job.name
    schedule.urls = list(spec.job.urls)
    schedule.options = spec.options()
    schedule.cron, schedule.interval, schedule.timezone = spec.cron, spec.interval, spec.timezone
    schedule.enabled = spec.enabled
    schedule.notify_url, schedule.notify_on, schedule.notify_email = spec.notify.url, list(spec.notify.on), spec.notify.email
    if not schedule.enabled:
        schedule.next_run_at = None
    elif timing_changed or schedule.next_run_at is None:
        schedule.next_run_at = None
        schedule.next_run_at = next_tick(schedule, after=timezone.now())


def create_schedule(*, owner: AbstractBaseUser, spec: ScheduleSpec) -> Schedule:
    schedule = Schedule(owner=owner)
    apply_spec(schedule, spec)
    schedule.save()
    return schedule


def owned_schedule_id(user: AbstractBaseUser, raw: str) -> int | None:
    """`raw` as the id of one of the user's schedules, else None."""
    if not raw.isdigit() or not Schedule.objects.filter(pk=int(raw), owner=user).exists():
        return None
    return int(raw)


def as_input(schedule: Schedule) -> dict[str, Any]:
    """The stored schedule as API input, so a PATCH can be merged onto it and validated whole."""
    return {
        "name": schedule.name, "urls": list(schedule.urls), **schedule.options,
        "cron": schedule.cron or None, "interval": schedule.interval, "timezone": schedule.timezone,
        "enabled": schedule.enabled, "notify_url": schedule.notify_url, "notify_on": list(schedule.notify_on),
        "notify_email": schedule.notify_email,
    }  # fmt: skip


@dataclass(frozen=True, slots=True)
class TickOutcome:
    """What one tick pass did: the runs it recorded (started or skipped)."""

    runs: tuple[ScheduleRun, ...] = ()

    @property
    def started(self) -> int:
        return sum(run.status == ScheduleRun.Status.STARTED for run in self.runs)


def tick(*, now: datetime | None = None) -> TickOutcome:
    """Take every due tick no other worker took first; start its job or record it skipped."""
    now = now or timezone.now()
    due = list(
        Schedule.objects.filter(enabled=True, next_run_at__lte=now).select_related("owner").order_by("next_run_at")[
            :TICK_BATCH
        ]
    )
    runs = []
    for schedule in due:
        run = _take_tick(schedule, now)
        if run is not None:
            runs.append(run)
    return TickOutcome(tuple(runs))


def _take_tick(schedule: Schedule, now: datetime) -> ScheduleRun | None:
    due_at = schedule.next_run_at
    assert due_at is not None
    following = next_tick(schedule, after=now)
    try:
        with transaction.atomic():
            taken = Schedule.objects.filter(pk=schedule.pk, enabled=True, next_run_at=due_at).update(
                next_run_at=following
            )
            if not taken:
                return None  # another worker took this tick (or the schedule changed meanwhile)
            schedule.next_run_at = following
            return _run(schedule, due_at=due_at, manual=False)
    except IntegrityError:
        return None  # the unique tick guard: a run for this tick exists already


def run_now(schedule: Schedule) -> ScheduleRun:
    """Start a run at once (the API's and admin's "run now"), skipped like a tick if the previous one is going."""
    with transaction.atomic():
        Schedule.objects.select_for_update().filter(pk=schedule.pk).first()  # one run-now at a time per schedule
        return _run(schedule, due_at=timezone.now(), manual=True)


def _run(schedule: Schedule, *, due_at: datetime, manual: bool) -> ScheduleRun:
    """Inside the tick's transaction: record the run, starting its job unless the previous run is going."""
    latest = Job.objects.filter(monitor__schedule=schedule).order_by("-created_at", "-id").first()
    if latest is not None and not latest.is_terminal:
        return ScheduleRun.objects.create(
            schedule=schedule, due_at=due_at, manual=manual, status=ScheduleRun.Status.SKIPPED,
            reason=f"the previous run ({latest.pk}) is still {latest.status}",
        )  # fmt: skip
    job = enqueue_job(
        owner=schedule.owner, urls=schedule.urls, name=schedule.name or f"schedule {schedule.pk}",
        concurrency=schedule.options["concurrency"], timeout=schedule.options["timeout"],
        options={
            **{key: schedule.options[key] for key in validation.OPTION_FIELDS if key in schedule.options},
            "duplicate_urls": len(schedule.urls) - len(set(schedule.urls)),
        },
    )  # fmt: skip
    JobMonitor.objects.create(
        job=job, schedule=schedule, previous=latest, notify_url=schedule.notify_url,
        notify_on=schedule.notify_on, notify_email=schedule.notify_email,
    )  # fmt: skip
    return ScheduleRun.objects.create(
        schedule=schedule, due_at=due_at, manual=manual, status=ScheduleRun.Status.STARTED, job=job
    )
