"""`make bench`: Batchfetch end to end next to the bare asyncio scripts, on the same loopback URLs.

    scripts/testenv.py -- python -m bench [--quick] [--only sqlite|postgresql] [--no-engine] [--politeness] [--requests] [--changes]

Needs REDIS_URL and TEST_POSTGRES_URL (scripts/testenv.py provides both, as
for `make test`). Starts one loopback target process per delay
(`python -m tests.target`), runs the baselines (`bench.baselines`) as separate
processes, then for each database a daphne + `runworker` stack
(`bench.e2e.Stack`) and submits each cell's job through the API. Prints one
table and writes it, with the machine described, to bench/results.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import psutil

from bench import report
from bench.baselines import urls as make_urls
from bench.e2e import JobFigures, Stack, cpu_seconds
from scripts.localservices import ManagedProcess, start_process

BASE_DIR = Path(__file__).resolve().parent.parent
BODY_BYTES = 1024
# A baseline slower than this is stopped and its time extrapolated from the requests it did (marked ~).
BASELINE_TIME_LIMIT = 30.0
WORKER_CONCURRENCY = 200
WATCHERS = 200
REPEATS = 3
"""Runs of each cell of up to 10,000 URLs, ours and the aiohttp baseline (this machine's seconds and CPU
times vary by ~10% from run to run): the table shows the median run of each, its CPU time the median
over the runs, and the range of the seconds."""


@dataclass(frozen=True)
class Cell:
    n: int
    c: int
    delay_ms: int


T = TypeVar("T")

MATRIX = (Cell(10_000, 50, 50), Cell(10_000, 200, 50), Cell(100_000, 200, 0))
QUICK_MATRIX = (Cell(2_000, 50, 50), Cell(2_000, 200, 50), Cell(10_000, 200, 0))
FLEET = Cell(100_000, 200, 20)
"""The fleet cell (PostgreSQL): one job shared by FLEET_WORKERS workers, C=200 each (the job's concurrency is
200 x workers), 20 ms per request: one worker alone is CPU-bound at this delay."""
QUICK_FLEET = Cell(20_000, 200, 20)
FLEET_WORKERS = (1, 2, 4)


class Target:
    """`python -m tests.target` as a separate process."""

    def __init__(self, delay_ms: int, workdir: Path) -> None:
        self.delay_ms = delay_ms
        log = workdir / f"target-{delay_ms}ms.log"
        argv = [sys.executable, "-m", "tests.target", "--port", "0", "--delay-ms", str(delay_ms),
                "--body-bytes", str(BODY_BYTES)]  # fmt: skip
        self.process: ManagedProcess = start_process(f"target {delay_ms} ms", argv, cwd=BASE_DIR, log_path=log)
        deadline = time.monotonic() + 30
        while not (log.exists() and log.read_text().startswith("http")):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the target server did not start{self.process.log_tail()}")
            time.sleep(0.05)
        self.base_url = log.read_text().splitlines()[0].strip()

    async def reset(self) -> None:
        async with aiohttp.ClientSession() as session, session.post(self.base_url + "/stats/reset") as response:
            await response.read()

    async def peak_in_flight(self) -> int:
        async with aiohttp.ClientSession() as session, session.get(self.base_url + "/stats") as response:
            return int((await response.json())["peak_in_flight"])


def repeats(cell: Cell, args: argparse.Namespace) -> int:
    return 1 if args.quick or cell.n > 10_000 else REPEATS


def median_run(runs: list[T], seconds: Callable[[T], float]) -> T:
    """The run with the median time (the upper one of an even count)."""
    return sorted(runs, key=seconds)[len(runs) // 2]


async def run_baseline(kind: str, target: Target, cell: Cell) -> dict[str, Any]:
    await target.reset()
    argv = [sys.executable, "-m", "bench.baselines", kind, "--base", target.base_url, "--n", str(cell.n),
            "--c", str(cell.c), "--time-limit", str(BASELINE_TIME_LIMIT)]  # fmt: skip
    out = await asyncio.to_thread(subprocess.run, argv, cwd=BASE_DIR, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout)
    result["peak_in_flight"] = await target.peak_in_flight()
    if not result["complete"]:
        # Extrapolate from the part done; CPU too, per URL.
        done = max(result["done"], 1)
        result["seconds"] *= cell.n / done
        result["cpu_seconds"] *= cell.n / done
    print(f"  {kind:8} {cell}: {result['seconds']:.2f} s{'' if result['complete'] else ' (extrapolated)'}", flush=True)
    return result


async def run_ours(stack: Stack, target: Target, cell: Cell, *, watchers: int = 1) -> tuple[JobFigures, int]:
    await target.reset()
    figures = await stack.run_job(make_urls(target.base_url, cell.n), cell.c, watchers=watchers)
    peak = await target.peak_in_flight()
    print(f"  ours     {stack.name} {cell} x{watchers}: {figures.seconds:.2f} s, {figures.status}", flush=True)
    return figures, peak


async def run_fleet(
    database_url: str, redis_url: str, workdir: Path, target: Target, cell: Cell, workers: int
) -> report.FleetRow:
    """One job of `cell.n` URLs shared by `workers` runworker processes of concurrency `cell.c` each."""
    async with Stack(
        name=f"postgresql x{workers}", database_url=database_url, redis_url=redis_url, workdir=workdir,
        worker_concurrency=cell.c, workers=workers, username=f"bench-fleet-{workers}",
    ) as stack:  # fmt: skip
        await stack.run_job(make_urls(target.base_url, 500), cell.c)  # imports, connections
        await asyncio.sleep(2)  # every worker idle and polling when the job arrives
        target_proc = psutil.Process(target.process.pid)
        target_cpu, machine = cpu_seconds(target_proc), psutil.cpu_times()
        figures, _ = await run_ours(stack, target, Cell(cell.n, cell.c * workers, cell.delay_ms))
        after = psutil.cpu_times()
    busy = sum(getattr(after, f) - getattr(machine, f) for f in ("user", "system", "nice", "irq", "softirq", "steal"))
    target_cpu = cpu_seconds(target_proc) - target_cpu
    return report.FleetRow(
        workers=workers, delay_ms=cell.delay_ms, ours=figures, target_cpu_seconds=target_cpu,
        cores_busy=busy / figures.seconds,
    )  # fmt: skip


async def run_engine(target: Target, n: int, c: int) -> list[dict[str, Any]]:
    """bench.engine: the fetch engine alone with each client variant, on asyncio's loop and on uvloop."""
    results = []
    for loop in ("asyncio", "uvloop"):
        argv = [sys.executable, "-m", "bench.engine", "--base", target.base_url, "--n", str(n), "--c", str(c),
                "--loop", loop]  # fmt: skip
        out = await asyncio.to_thread(subprocess.run, argv, cwd=BASE_DIR, check=True, capture_output=True, text=True)
        results += [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    for r in results:
        print(f"  {r['variant']:26} {r['loop']:7}: {r['seconds']:.2f} s, {r['cpu_seconds']:.2f} s CPU", flush=True)
    return results


async def main_async(args: argparse.Namespace) -> int:
    redis_url = os.environ.get("REDIS_URL")
    pg_url = os.environ.get("TEST_POSTGRES_URL")
    if not redis_url or not pg_url:
        print("REDIS_URL and TEST_POSTGRES_URL must be set: run `make bench` (scripts/testenv.py starts both)")
        return 2
    matrix = () if args.only == "fleet" else QUICK_MATRIX if args.quick else MATRIX
    started = time.monotonic()
    machine = report.describe_machine()
    workdir = Path(tempfile.mkdtemp(prefix="batchfetch-bench-"))
    fleet = None if args.no_fleet or args.only == "sqlite" else (QUICK_FLEET if args.quick else FLEET)
    delays = {cell.delay_ms for cell in matrix} | ({fleet.delay_ms} if fleet else set())
    targets = {delay: Target(delay, workdir) for delay in sorted(delays)}
    rows: list[report.Row] = []
    watch_rows: list[report.WatchRow] = []
    fleet_rows: list[report.FleetRow] = []
    try:
        print("baselines (separate processes):", flush=True)
        baselines: dict[Cell, dict[str, dict[str, Any]]] = {}
        for cell in matrix:
            target = targets[cell.delay_ms]
            runs = [await run_baseline("aiohttp", target, cell) for _ in range(repeats(cell, args))]
            cpu = statistics.median(run["cpu_seconds"] for run in runs)
            median = median_run(runs, lambda run: run["seconds"])
            baselines[cell] = {"aiohttp": {**median, "cpu_seconds": cpu, "runs": [run["seconds"] for run in runs]}}
            baselines[cell]["httpx"] = await run_baseline("httpx", target, cell)  # far slower: once is enough
        engine: list[dict[str, Any]] = []
        if matrix and not args.no_engine:
            print("the fetch engine alone (bench.engine):", flush=True)
            engine = await run_engine(targets[matrix[-1].delay_ms], matrix[-1].n // 10, WORKER_CONCURRENCY)
        databases = {"sqlite": f"sqlite:///{workdir / 'bench.sqlite3'}", "postgresql": pg_url}
        for db, database_url in databases.items():
            if args.only and db != args.only:
                continue
            print(f"Batchfetch on {db} (daphne + runworker --concurrency {WORKER_CONCURRENCY}):", flush=True)
            async with Stack(
                name=db, database_url=database_url, redis_url=redis_url, workdir=workdir / db,
                worker_concurrency=WORKER_CONCURRENCY,
            ) as stack:  # fmt: skip
                warm = matrix[0]
                await stack.run_job(make_urls(targets[warm.delay_ms].base_url, 500), warm.c)  # imports, connections
                for cell in matrix:
                    runs = [await run_ours(stack, targets[cell.delay_ms], cell) for _ in range(repeats(cell, args))]
                    figures, peak = median_run(runs, lambda run: run[0].seconds)
                    cpu = statistics.median(run[0].worker_cpu_seconds for run in runs)
                    figures = dataclasses.replace(figures, worker_cpu_seconds=cpu)
                    rows.append(report.Row(db=db, delay_ms=cell.delay_ms, ours=figures, peak_in_flight=peak,
                                           baselines=baselines[cell], ours_runs=[run[0].seconds for run in runs]))  # fmt: skip
                if db == "postgresql" or args.only == db:
                    # C=50: the job lasts >= 10 s, so the 200 sockets are all open while it runs.
                    cell = Cell(matrix[0].n, 50, 50)
                    figures, _ = await run_ours(stack, targets[50], cell, watchers=WATCHERS)
                    watch_rows.append(report.WatchRow(db=db, delay_ms=50, ours=figures))
        if fleet is not None:
            print(f"the fleet on postgresql ({', '.join(map(str, FLEET_WORKERS))} workers, C={fleet.c} each):", flush=True)
            for workers in FLEET_WORKERS:
                fleet_rows.append(await run_fleet(pg_url, redis_url, workdir / f"fleet-{workers}",
                                                  targets[fleet.delay_ms], fleet, workers))  # fmt: skip
    finally:
        for target in targets.values():
            target.process.stop(timeout=10)
    shutil.rmtree(workdir, ignore_errors=True)  # kept after a failure: the daphne and worker logs are there
    elapsed = time.monotonic() - started
    text = report.render(
        rows, watch_rows, engine, fleet=fleet_rows, machine=machine, elapsed=elapsed, quick=args.quick
    )
    print()
    print(text)
    if not (args.quick or args.only or args.no_engine or args.no_fleet):  # only a full run replaces the recorded one
        report.write_results(BASE_DIR / "bench" / "results.md", text)
        print("written to bench/results.md")
        run_requests()
        run_changes()
    return 0


def run_requests() -> None:
    """bench.requests: requests with a body against GETs, in the engine and end to end at 0 and 50 ms (each run
    with its own target and its own block of results.md)."""
    print("\nrequests with a body (bench.requests):", flush=True)
    for extra in ([], ["--e2e"], ["--e2e", "--delay-ms", "50"]):
        subprocess.run([sys.executable, "-m", "bench.requests", "--write", *extra], cwd=BASE_DIR, check=True)


def run_changes() -> None:
    """bench.changes: "what changed" for 100,000 URLs on both databases (its block of results.md)."""
    print("\nwhat changed, 100,000 URLs (bench.changes):", flush=True)
    subprocess.run([sys.executable, "-m", "bench.changes", "--write"], cwd=BASE_DIR, check=True)


def main() -> None:
    # SIGTERM (e.g. from scripts/testenv.py) unwinds like Ctrl-C, so the finally blocks stop what we started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small matrix (a smoke run; results.md untouched)")
    parser.add_argument("--no-engine", action="store_true", help="skip the client variants (bench.engine)")
    parser.add_argument(
        "--only", choices=("sqlite", "postgresql", "fleet"), help="run the end-to-end cells on one database, or the fleet"
    )
    parser.add_argument("--no-fleet", action="store_true", help="skip the fleet cell (one job, 1/2/4 workers)")
    parser.add_argument("--politeness", action="store_true",
                        help="run only the politeness cell (bench/politeness.py: 4 workers, shared vs per-worker slots)")  # fmt: skip
    parser.add_argument("--requests", action="store_true",
                        help="run only the requests cell (bench/requests.py: POSTs with bodies against GETs)")  # fmt: skip
    parser.add_argument("--changes", action="store_true",
                        help="run only the what-changed cell (bench/changes.py: 100,000 URLs, both databases)")  # fmt: skip
    args = parser.parse_args()
    if args.requests:
        run_requests()
        sys.exit(0)
    if args.changes:
        run_changes()
        sys.exit(0)
    if args.politeness:
        from bench import politeness

        sys.exit(asyncio.run(politeness.main_async()))
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
