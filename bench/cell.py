"""One cell, run again and again: paired runs, the fleet, and py-spy profiles of the worker and the web process.

    scripts/testenv.py -- python -m bench.cell --db sqlite --n 100000 --c 200 --delay-ms 0 [--runs 3]
        [--workers 1] [--baseline] [--profile DIR] [--env NAME=VALUE ...]

Each run submits one job through the API (as `make bench` does) and prints its
seconds, throughput and the workers' CPU per URL; `--baseline` runs the bare
aiohttp script before each of ours, so every ratio pairs two runs made within
the same minute (the machine is shared: compare ratios and CPU per URL, not
seconds across runs). `--workers N` starts N `runworker` processes sharing the
job (the job's concurrency is then C x N: C each). `--profile DIR` records the
first worker and daphne with py-spy over each job and prints where their
samples went (`summarize`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.__main__ import WORKER_CONCURRENCY, Cell, Target, run_baseline
from bench.baselines import urls as make_urls
from bench.e2e import JobFigures, Stack

BASE_DIR = Path(__file__).resolve().parent.parent

CATEGORIES = (
    # (name, substrings of a stack, the first category whose substring a stack holds wins: outermost concerns first)
    ("result write (record_results)", ("record_results",)),
    ("chunk claim (claim_chunk)", ("claim_chunk",)),
    ("share check (check_share)", ("check_share",)),
    ("job claim (claim_job)", ("claim_job",)),
    ("leave job", ("leave_job",)),
    ("progress (publisher, channels-redis)", ("jobs/progress/", "channels_redis", "redis/")),
    ("submission (web: parse, validate, insert)", ("jobs/submission/", "bulkinsert")),
    ("web: API, views, consumers", ("jobs/web/",)),
    ("fetch: engine (jobs/engine)", ("jobs/engine/",)),
    ("fetch: httpx", ("httpx/",)),
    ("fetch: aiohttp", ("aiohttp/",)),
    ("worker: jobrun, runner", ("jobs/worker/",)),
    ("database driver (sqlite3, psycopg)", ("psycopg", "sqlite3", "django/db/")),
    ("asyncio loop, selectors, sockets", ("asyncio/", "selectors.py", "socket.py")),
    ("daphne, twisted, autobahn", ("daphne/", "twisted/", "autobahn/")),
)


def categorize(stack: str) -> str:
    for name, needles in CATEGORIES:
        if any(needle in stack for needle in needles):
            return name
    return "other"


def _stacks(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) output: (frames, outermost first; samples) per line."""
    rows = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            rows.append((stack.split(";"), int(count)))
    return rows


def _count(path: Path, key: Callable[[list[str]], str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for frames, n in _stacks(path):
        counts[key(frames)] += n
    return counts


def summarize(path: Path) -> list[tuple[str, int, float]]:
    """Samples per concern (CATEGORIES), largest first: (category, samples, share)."""
    counts = _count(path, lambda frames: categorize(";".join(frames)))
    total = sum(counts.values()) or 1
    return [(name, n, n / total) for name, n in counts.most_common()]


def threads(path: Path) -> list[tuple[str, int]]:
    """Samples per thread (py-spy --threads names the thread in the first frame)."""
    return _count(path, lambda frames: frames[0].partition(": ")[2] or "?").most_common()


def hottest(path: Path, top: int = 15) -> list[tuple[str, int]]:
    """The leaf frames with the most samples (self time)."""
    return _count(path, lambda frames: frames[-1]).most_common(top)


class Recorder:
    """`py-spy record` of one process, from start() until stop() (SIGINT makes it write the file)."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        argv = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--rate", "100",
                "--format", "raw", "--nonblocking", "--threads", "--gil", "-o", str(out)]  # fmt: skip
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=30)


def _print_profile(label: str, path: Path) -> None:
    if not path.exists():
        print(f"    {label}: no profile written")
        return
    rows = summarize(path)
    total = sum(n for _, n, _ in rows)
    print(f"    {label}: {total} samples (100/s, the thread holding the GIL)")
    for thread, n in threads(path):
        print(f"      {n / total:6.1%}  thread {thread}")
    for name, n, share in rows:
        print(f"      {share:6.1%}  {name}")
    print("      hottest leaf frames:")
    for frame, n in hottest(path):
        print(f"      {n / total:6.1%}  {frame}")


async def run(args: argparse.Namespace) -> int:
    redis_url, pg_url = os.environ.get("REDIS_URL"), os.environ.get("TEST_POSTGRES_URL")
    if not redis_url or (args.db == "postgresql" and not pg_url):
        print("REDIS_URL (and TEST_POSTGRES_URL for postgresql) must be set: run under scripts/testenv.py")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="batchfetch-cell-"))
    database_url = f"sqlite:///{workdir / 'bench.sqlite3'}" if args.db == "sqlite" else pg_url
    assert database_url is not None
    target = Target(args.delay_ms, workdir)
    job_concurrency = args.c * args.workers
    print(f"{args.db} N={args.n:,} C={args.c} x {args.workers} worker(s), {args.delay_ms} ms;"
          f" load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)  # fmt: skip
    try:
        async with Stack(
            name=args.db, database_url=database_url, redis_url=redis_url, workdir=workdir / args.db,
            worker_concurrency=args.c, workers=args.workers, extra_env=dict(item.split("=", 1) for item in args.env),
        ) as stack:  # fmt: skip
            await stack.run_job(make_urls(target.base_url, 500), min(job_concurrency, 50))  # imports, connections
            if args.workers > 1:
                await asyncio.sleep(2)  # every worker idle and polling before the job arrives
            for i in range(args.runs):
                base = None
                if args.baseline:
                    base = await run_baseline("aiohttp", target, Cell(args.n, job_concurrency, args.delay_ms))
                recorders: list[tuple[str, Recorder]] = []
                if args.profile:
                    out = Path(args.profile)
                    out.mkdir(parents=True, exist_ok=True)
                    assert stack.daphne is not None
                    recorders = [
                        ("worker", Recorder(stack.workers[0].pid, out / f"worker-{i + 1}.txt")),
                        ("daphne", Recorder(stack.daphne.pid, out / f"daphne-{i + 1}.txt")),
                    ]
                    await asyncio.sleep(0.5)  # attached
                await target.reset()
                figures = await stack.run_job(make_urls(target.base_url, args.n), job_concurrency)
                for _, recorder in recorders:
                    recorder.stop()
                _print_run(i + 1, figures, base)
                for label, recorder in recorders:
                    _print_profile(label, recorder.out)
    finally:
        target.process.stop(timeout=10)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


def _print_run(i: int, o: JobFigures, base: dict[str, object] | None) -> None:
    line = (
        f"  run {i}: ours {o.seconds:.2f} s ({o.status}, {o.succeeded:,} ok), {o.n / o.seconds:,.0f} URLs/s,"
        f" workers' CPU {o.worker_cpu_seconds * 1000 / o.n:.3f} ms/URL, submit {o.submit_seconds:.2f} s,"
        f" RSS {o.worker_rss_start_mb:.0f}/{o.worker_rss_peak_mb:.0f}/{o.worker_rss_end_mb:.0f} MB,"
        f" p95 {o.latency_p95:.0f} ms; after the POST: "
        + ", ".join(f"{key.removesuffix('_at')} {value:.2f}" for key, value in o.timeline.items())
    )
    if base is not None:
        seconds, cpu = float(base["seconds"]), float(base["cpu_seconds"])  # type: ignore[arg-type]
        line += f"; aiohttp {seconds:.2f} s, {cpu * 1000 / o.n:.3f} ms/URL; ours/aiohttp {seconds / o.seconds:.2f}"
    print(line, flush=True)


def main() -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    parser = argparse.ArgumentParser(prog="python -m bench.cell", description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--n", type=int, default=100_000, help="URLs in the job")
    parser.add_argument("--c", type=int, default=WORKER_CONCURRENCY, help="concurrency of each worker")
    parser.add_argument("--delay-ms", type=int, default=0, help="the target's delay per request")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="runworker processes sharing the job")
    parser.add_argument("--baseline", action="store_true", help="run the bare aiohttp script before each run")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the first worker and daphne over each job")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for daphne and the workers (e.g. FETCH_SHARED_HOST_SLOTS=0)")  # fmt: skip
    started = time.monotonic()
    code = asyncio.run(run(parser.parse_args()))
    print(f"took {time.monotonic() - started:.0f} s")
    sys.exit(code)


if __name__ == "__main__":
    main()
