"""`manage.py runworker`: run a Batchfetch worker (a thin shim over jobs.worker.runner).

This app is listed before `channels` in INSTALLED_APPS, so this command wins
over Channels' own `runworker` (Django uses the first app's command).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.ops import health
from jobs.worker import eventloop, housekeeping
from jobs.worker.runner import Worker

# --verbosity -> level of the `jobs` loggers; 1 (the default) keeps the configured level.
VERBOSITY_LEVELS = {0: logging.WARNING, 2: logging.DEBUG, 3: logging.DEBUG}
GC_THRESHOLD = 10_000
"""Allocations that start a young-generation collection in the worker (CPython's default: 700)."""


@contextlib.contextmanager
def worker_gc() -> Iterator[None]:
    """Fewer, cheaper cyclic-GC passes while the worker runs.

    Every URL allocates a few dozen short-lived objects; at the default threshold
    CPython ran ~55 young collections per 1,000 URLs, each older-generation pass
    also walking the whole Django heap: ~0.5 s of GC per 10,000-URL job, about
    12% of the worker's CPU (bench/results.md). Objects freed by reference
    counting (the engine makes no cycles) never need a pass, so a rarer one
    costs nothing; `gc.freeze()` moves what startup allocated (Django, the app)
    where no pass walks it (cyclic garbage among it stays until the run ends).
    The state found is restored afterwards (tests run the command in-process).
    """
    previous = gc.get_threshold()
    freeze = gc.get_freeze_count() == 0  # objects someone else froze stay frozen
    if freeze:
        gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        if freeze:
            gc.unfreeze()


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse `type=` accepting integers in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, not {value}")
        return value

    return parse


def seconds(text: str) -> float:
    """An argparse `type=` accepting a non-negative number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0 and 3600 seconds, not {text}")
    return value


def worker_id(text: str) -> str:
    """An argparse `type=` for --worker-id: 1-200 printable characters (Job.worker_id's size)."""
    if not 1 <= len(text) <= 200 or not text.isprintable():
        raise argparse.ArgumentTypeError("must be 1 to 200 printable characters")
    return text


class Command(BaseCommand):
    help = "Run a worker: claim queued jobs from the database and fetch their URLs until SIGINT/SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--concurrency", type=bounded_int(1, 10_000), default=100,
            help="requests in flight at most, over all jobs of this worker; also its connection pool size (100)",
        )  # fmt: skip
        parser.add_argument("--max-jobs", type=bounded_int(1, 1000), default=4, help="jobs run in parallel at most (4)")
        parser.add_argument("--batch", action="store_true", help="exit once the queue is empty (tests, one-off runs)")
        parser.add_argument("--worker-id", type=worker_id, help="name in Job.worker_id (default host:pid:random)")
        parser.add_argument(
            "--grace", type=seconds, default=10.0,
            help="seconds in-flight requests get to finish after SIGINT/SIGTERM before the job is handed back (10)",
        )  # fmt: skip
        parser.add_argument(
            "--metrics-port", type=bounded_int(1, 65535), metavar="PORT",
            help="serve this worker's Prometheus metrics on http://ADDR:PORT/metrics (one port per worker process)",
        )  # fmt: skip
        parser.add_argument("--metrics-addr", default="0.0.0.0", metavar="ADDR",
                            help="address the metrics endpoint listens on (0.0.0.0)")  # fmt: skip
        parser.add_argument(
            "--health-file", type=Path, metavar="PATH",
            help="touch PATH every few seconds while running; with --check, fail if it is stale",
        )  # fmt: skip
        parser.add_argument(
            "--check", action="store_true",
            help="exit 0 if the database and Redis answer within 1 s (and --health-file is fresh), else 1",
        )  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        if options["check"]:
            self._check(options["health_file"])
            return
        if options["max_jobs"] > options["concurrency"]:
            raise CommandError(
                f"--max-jobs {options['max_jobs']} exceeds --concurrency {options['concurrency']}:"
                " each running job needs at least one request slot"
            )
        level = VERBOSITY_LEVELS.get(options["verbosity"])
        if level is not None:
            logging.getLogger("jobs").setLevel(level)
        worker = Worker(
            concurrency=options["concurrency"],
            max_jobs=options["max_jobs"],
            batch=options["batch"],
            worker_id=options["worker_id"],
            grace=options["grace"],
            health_file=options["health_file"],
        )
        with worker_gc(), housekeeping.metrics_server(options["metrics_port"], options["metrics_addr"]):
            # -v 3 or BATCHFETCH_ASYNCIO_DEBUG: asyncio's debug mode, its warnings in this log (jobs/worker/eventloop.py).
            eventloop.run(worker.run(), debug=eventloop.debug_requested(options["verbosity"]))

    def _check(self, health_file: Path | None) -> None:
        """A container health check: prints the checks as JSON; CommandError (exit 1) naming what failed."""
        ready = asyncio.run(health.readiness())
        report = ready.as_dict()
        problems = [f"{name}: {report['checks'][name]['error']}" for name in ready.failed]
        if health_file is not None:
            problem = housekeeping.liveness_problem(health_file)
            report["checks"]["worker"] = {"ok": problem is None, "error": problem or ""}
            if problem is not None:
                problems.append(f"worker: {problem}")
        report["status"] = "unavailable" if problems else "ok"
        self.stdout.write(json.dumps(report))
        if problems:
            raise CommandError("not healthy: " + "; ".join(problems))
