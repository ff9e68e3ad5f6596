"""How long "what changed" takes for a big list: two runs of N URLs compared in the database.

    scripts/testenv.py -- python -m bench.changes [--urls 100000] [--postgres | --write]

Creates a throwaway test database (Django's test-database machinery: SQLite
in a temporary file, or `test_<name>` on TEST_POSTGRES_URL with --postgres),
stores two finished runs of N URLs (a tenth of them changed in each of the
four ways), then times `jobs.monitoring.changes.compare` (the INSERT ... SELECT
per batch) and the counts the API answers. Prints one table row.

`--write` (what a full `make bench` runs) measures SQLite and PostgreSQL, each
in a process of its own, and writes the table as the `changes` block of
bench/results.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
HEADER = (
    "| database | URLs | batches (queries) | compare, best of 3 | worst | counts query | setup |",
    "|---|---:|---:|---:|---:|---:|---:|",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=100_000)
    parser.add_argument("--postgres", action="store_true", help="use TEST_POSTGRES_URL instead of SQLite")
    parser.add_argument("--write", action="store_true", help="both databases; replace the changes block of results.md")
    args = parser.parse_args()
    if args.write:
        write_both(args.urls)
        return
    os.environ.setdefault("DJANGO_DEBUG", "1")
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    if args.postgres:
        os.environ["DATABASE_URL"] = os.environ["TEST_POSTGRES_URL"]
    else:
        os.environ.pop("DATABASE_URL", None)
        os.environ["BATCHFETCH_VAR_DIR"] = tempfile.mkdtemp(prefix="bench-changes-")
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()
    from django.test.utils import setup_databases, teardown_databases

    config = setup_databases(verbosity=0, interactive=False)
    try:
        run(args.urls)
    finally:
        teardown_databases(config, verbosity=0)


def run(n: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from jobs.models import Job, Result
    from jobs.monitoring import changes
    from jobs.queue.control import enqueue_job

    owner = get_user_model().objects.create_user(username="bench")
    urls = [f"http://h{i % 97}.example/page/{i}" for i in range(n)]
    started = time.perf_counter()
    first = enqueue_job(owner=owner, urls=urls, name="first", concurrency=10, timeout=5.0)
    second = enqueue_job(owner=owner, urls=urls, name="second", concurrency=10, timeout=5.0)
    now = timezone.now()
    Result.objects.filter(job__in=[first, second]).update(outcome="succeeded", status_code=200, sha256="a" * 64,
                                                          fetched_at=now)  # fmt: skip
    # A tenth of the URLs each: 200 -> 500 (new failure), 503 -> 200 (recovered), 200 -> 203 (status
    # changed), another body (content changed); the rest unchanged.
    tenth = n // 10
    Result.objects.filter(job=second, position__lt=tenth).update(outcome="failed", status_code=500, sha256="")
    Result.objects.filter(job=first, position__gte=tenth, position__lt=2 * tenth).update(outcome="failed", status_code=503)
    Result.objects.filter(job=second, position__gte=2 * tenth, position__lt=3 * tenth).update(status_code=203)
    Result.objects.filter(job=second, position__gte=3 * tenth, position__lt=4 * tenth).update(sha256="b" * 64)
    Job.objects.filter(pk__in=[first.pk, second.pk]).update(status="completed")
    setup = time.perf_counter() - started
    second.refresh_from_db()

    timings = []
    for _ in range(3):
        started = time.perf_counter()
        counts = changes.compare(second, first)
        timings.append(time.perf_counter() - started)
    started = time.perf_counter()
    changes.counts(second.pk)
    count_time = time.perf_counter() - started
    expected = {"new_failure": tenth, "recovered": tenth, "status_changed": tenth, "content_changed": tenth,
                "unchanged": n - 4 * tenth}  # fmt: skip
    assert counts == expected, counts
    batches = -(-n // changes.CHANGES_BATCH)
    print("\n".join(HEADER))
    print(f"| {connection.vendor} | {n:,} | {batches} | {min(timings):.2f} s | {max(timings):.2f} s "
          f"| {count_time * 1000:.0f} ms | {setup:.1f} s |")  # fmt: skip


def write_both(n: int) -> None:
    """Measure each database in a fresh process (one Django setup each); write the table to results.md."""
    from bench import report

    rows = []
    for flags in ([], ["--postgres"]):
        argv = [sys.executable, "-m", "bench.changes", "--urls", str(n), *flags]
        out = subprocess.run(argv, cwd=BASE_DIR, check=True, capture_output=True, text=True).stdout
        rows.append(out.strip().splitlines()[-1])
    text = "\n".join([
        f"### What changed: two runs of {n:,} URLs compared in the database (bench/changes.py)", "", *HEADER, *rows,
    ])  # fmt: skip
    print(text)
    report.write_section(BASE_DIR / "bench" / "results.md", "changes", text)
    print("written to bench/results.md")


if __name__ == "__main__":
    main()
