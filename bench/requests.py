"""Requests with a body against plain GETs: the fetch engine's CPU per request (issue 14's target: within 10 %).

    python -m bench.requests [--n 10000] [--c 200] [--delay-ms 0] [--repeats 3] [--write]
    scripts/testenv.py --no-postgres -- python -m bench.requests --e2e [--delay-ms 50]

Starts the loopback target (`python -m tests.target`, a 1 KiB body, `--delay-ms` before each answer) as its own
process, then in this process runs `fetch_all` over the same N URLs as GETs
(the plain fast path), as POSTs of a job-level request (a JSON body and a
bearer token), and as POSTs whose every line has its own request (its own
body, the token merged in, as the worker builds them from `RequestLine` rows).
Prints one table row per variant: the median seconds and CPU seconds over the
runs, CPU per request, and the ratios to the GETs. With a delay (a real API's latency) the
seconds are the job's time; without one the run is CPU-bound and shows the engine's cost per request.
Sending a body costs aiohttp a writer task per request (Python 3.11 has no eager tasks), which
is most of the difference in CPU.

With `--e2e` the same three jobs go through the product instead: daphne and one `runworker` on a
SQLite database (bench.e2e.Stack, REDIS_URL from scripts/testenv.py), submitted over the API
(`urls`; `method`, `headers`, `json`; `requests` with a `json` body per line), and the table
shows each job's seconds (from sending the POST to seeing the job final), the POST's part of them,
and the worker's CPU per request.

A full `make bench` runs the engine table and the end-to-end tables at 0 ms (CPU-bound) and at
50 ms (the delay of the standard 10k cells), each with `--write`: its own block of bench/results.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench import report
from bench.baselines import urls as make_urls
from bench.e2e import Stack
from jobs.engine.client import make_client
from jobs.engine.pipeline import fetch_all
from jobs.engine.requestspec import RequestSpec
from jobs.engine.values import FetchOptions, FetchResult
from scripts.localservices import start_process

BASE_DIR = Path(__file__).resolve().parent.parent
TOKEN = ("Authorization", "Bearer bench-token-0123456789abcdef")
JSON = ("Content-Type", "application/json")


def _items(variant: str, targets: list[str]) -> tuple[Iterable[Any], RequestSpec | None]:
    if variant == "GET":
        return list(enumerate(targets)), None
    if variant == "POST (job request)":
        body = json.dumps({"record": 1, "payload": "x" * 64}).encode()
        return list(enumerate(targets)), RequestSpec(method="POST", headers=(TOKEN, JSON), body=body)
    lines = [
        (i, url, RequestSpec(method="POST", headers=(TOKEN, JSON), body=json.dumps({"record": i}).encode()))
        for i, url in enumerate(targets)
    ]
    return lines, None


VARIANTS = ("GET", "POST (job request)", "POST (a request per line)")


def _rotated(turn: int) -> tuple[str, ...]:
    """The variants in this turn's order: each starts a turn in turn, so none always runs after another's
    writes (the database's growth, a WAL checkpoint, the collector's state)."""
    shift = turn % len(VARIANTS)
    return VARIANTS[shift:] + VARIANTS[:shift]


async def _run(variant: str, targets: list[str], concurrency: int) -> tuple[float, float, int]:
    items, default = _items(variant, targets)
    results: list[FetchResult] = []
    options = FetchOptions(timeout=30, request=default)
    async with make_client(max_connections=concurrency) as client:
        cpu0, started = time.process_time(), time.perf_counter()
        await fetch_all(client, items, concurrency=concurrency, options=options, on_result=results.append)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
    return seconds, cpu, sum(1 for r in results if r.outcome == "succeeded")


E2E_FIELDS: dict[str, Any] = {
    "GET": {},
    "POST (job request)": {"method": "POST", "headers": {TOKEN[0]: TOKEN[1]}, "json": {"record": 1, "payload": "x" * 64}},
}


async def _run_e2e(targets: list[str], concurrency: int, repeats: int, workdir: Path) -> dict[str, list[Any]]:
    """Each variant's (seconds, worker CPU, seconds of the POST alone) per run, through daphne + runworker on SQLite."""
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        raise SystemExit("REDIS_URL must be set: run it under scripts/testenv.py")
    per_line = {"method": "POST", "headers": {TOKEN[0]: TOKEN[1]},
                "requests": [{"url": url, "json": {"record": i}} for i, url in enumerate(targets)]}  # fmt: skip
    rows: dict[str, list[Any]] = {}
    async with Stack(name="sqlite", database_url=f"sqlite:///{workdir / 'requests.sqlite3'}", redis_url=redis_url,
                     workdir=workdir / "stack", worker_concurrency=concurrency) as stack:  # fmt: skip
        for turn in range(repeats):
            for variant in _rotated(turn):
                fields = E2E_FIELDS.get(variant, per_line)
                figures = await stack.run_job(targets, concurrency, fields=fields)
                if figures.succeeded != len(targets):
                    raise SystemExit(f"{variant}: only {figures.succeeded} of {len(targets)} requests succeeded")
                run = (figures.seconds, figures.worker_cpu_seconds, figures.submit_seconds)
                rows.setdefault(variant, []).append(run)
    return rows


def measure(args: argparse.Namespace) -> dict[str, list[tuple[float, ...]]]:
    """Each variant's (seconds, CPU seconds[, submit seconds]) per run, against a target of our own."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "target.log"
        argv = [sys.executable, "-m", "tests.target", "--port", "0", "--body-bytes", "1024",
                "--delay-ms", str(args.delay_ms)]  # fmt: skip
        target = start_process("target", argv, cwd=BASE_DIR, log_path=log)
        try:
            deadline = time.monotonic() + 30
            while not (log.exists() and log.read_text().startswith("http")):
                if target.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the target did not start{target.log_tail()}")
                time.sleep(0.05)
            targets = make_urls(log.read_text().splitlines()[0].strip(), args.n)
            if args.e2e:
                return asyncio.run(_run_e2e(targets, args.c, args.repeats, Path(tmp)))
            rows: dict[str, list[tuple[float, ...]]] = {}
            for turn in range(args.repeats):  # interleaved, so drift of the machine hits every variant alike
                for variant in _rotated(turn):
                    seconds, cpu, ok = asyncio.run(_run(variant, targets, args.c))
                    if ok != args.n:
                        raise SystemExit(f"{variant}: only {ok} of {args.n} requests succeeded")
                    rows.setdefault(variant, []).append((seconds, cpu))
            return rows
        finally:
            target.stop()


def render(rows: dict[str, list[tuple[float, ...]]], args: argparse.Namespace) -> str:
    """The table; end to end it also shows the submission's part of the seconds (the POST until its answer)."""
    base_seconds = statistics.median(run[0] for run in rows["GET"])
    base_cpu = statistics.median(run[1] for run in rows["GET"])
    where = "end to end (daphne + runworker, SQLite), worker CPU" if args.e2e else "the engine alone, this process's CPU"
    submit = ("| of which submit s ", "---:|") if args.e2e else ("", "")
    lines = [
        f"### Requests with a body against GETs: {args.n:,} requests, concurrency {args.c}, target delay"
        f" {args.delay_ms} ms, median of {args.repeats} runs, {where}",
        "",
        f"| variant | seconds | vs GET {submit[0]}| CPU s | CPU ms per request | CPU vs GET |",
        f"|---|---:|---:|{submit[1]}---:|---:|---:|",
    ]
    for variant, runs in rows.items():
        seconds = statistics.median(run[0] for run in runs)
        cpu = statistics.median(run[1] for run in runs)
        submitted = f"| {statistics.median(run[2] for run in runs):.2f} " if args.e2e else ""
        lines.append(f"| {variant} | {seconds:.2f} | {seconds / base_seconds - 1:+.1%} {submitted}| {cpu:.2f} | "
                     f"{cpu / args.n * 1000:.3f} | {cpu / base_cpu - 1:+.1%} |")  # fmt: skip
    return "\n".join(lines)


def section(args: argparse.Namespace) -> str:
    """The block of bench/results.md this run writes: one per kind of run and target delay."""
    name = "requests-e2e" if args.e2e else "requests"
    return f"{name}-{args.delay_ms}ms" if args.delay_ms else name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.requests", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--c", type=int, default=200)
    parser.add_argument("--delay-ms", type=int, default=0, help="the target's delay before each answer")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--e2e", action="store_true", help="through daphne + runworker (SQLite) instead of the engine")
    parser.add_argument("--write", action="store_true", help="replace the requests block of bench/results.md")
    args = parser.parse_args(argv)
    text = render(measure(args), args)
    print(text)
    if args.write:
        report.write_section(BASE_DIR / "bench" / "results.md", section(args), text)
        print("written to bench/results.md")


if __name__ == "__main__":
    main()
