"""`manage.py purge_jobs --older-than 30d [--dry-run] [--status completed,failed,cancelled]` (jobs/ops/retention.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from jobs.models import Job
from jobs.ops import retention


def _parsed(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse `type=` from a parser raising ValueError."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


class Command(BaseCommand):
    help = (
        "Delete finished jobs (completed, failed, cancelled) that finished longer ago than --older-than,"
        " with their results and saved bodies, in small batches. Unfinished jobs are never touched."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than", required=True, type=_parsed(retention.parse_age), metavar="AGE",
            help="how long ago the jobs finished: 30d, 12h, 90m, 2w, 0d (every finished job)",
        )  # fmt: skip
        parser.add_argument(
            "--status", type=_parsed(retention.parse_statuses), default=Job.TERMINAL, metavar="LIST",
            help="comma-separated finished statuses to purge (default: completed,failed,cancelled)",
        )  # fmt: skip
        parser.add_argument("--dry-run", action="store_true", help="count what would be removed, remove nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run = options["dry_run"]

        def progress(removed: retention.Removed) -> None:
            if options["verbosity"] >= 2:
                self.stdout.write(f"... {removed}")

        removed = retention.purge(
            older_than=options["older_than"], statuses=options["status"], dry_run=dry_run, progress=progress
        )
        verb = "Would remove" if dry_run else "Removed"
        self.stdout.write(f"{verb} {removed} (dry run: nothing was deleted)." if dry_run else f"{verb} {removed}.")
