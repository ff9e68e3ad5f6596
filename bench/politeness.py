"""The politeness cell: 4 workers, one host, per_host 8 — fleet-wide slots (Redis) against per-worker ones.

    scripts/testenv.py -- python -m bench --politeness     (or: python -m bench.politeness)

Runs daphne + 4 `runworker` processes on PostgreSQL and one loopback target
(20 ms per request), and one job of N URLs to that host per mode:

- shared: FETCH_SHARED_HOST_SLOTS on, per_host 8 — at most 8 in flight over the fleet;
- per-worker, per_host 2: the slots of each worker, 4 × 2 = the same 8 in flight (the fair baseline:
  the overhead of the shared slots is shared / this − 1);
- per-worker, per_host 8: what per_host 8 meant before, 4 × 8 = 32 in flight (for reference).

Each mode runs REPEATS times; the table shows the median run, the target's peak
in flight, and the workers' CPU per URL (all four summed). Writes its own
block of bench/results.md (between the politeness markers).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench import report
from bench.baselines import urls as make_urls
from bench.e2e import Stack
from scripts.localservices import start_process

BASE_DIR = Path(__file__).resolve().parent.parent
WORKERS = 4
DELAY_MS = 20
PER_HOST = 8
N = 4000
REPEATS = 3


@dataclass(frozen=True)
class Mode:
    name: str
    shared: bool
    per_host: int


MODES = (Mode("shared (Redis)", True, PER_HOST), Mode("per-worker, 2 each", False, PER_HOST // WORKERS),
         Mode("per-worker, 8 each", False, PER_HOST))  # fmt: skip


@dataclass(frozen=True)
class Run:
    seconds: float
    peak: int
    cpu_ms_per_url: float


async def run_mode(mode: Mode, stack: Stack, *, target_url: str, n: int, repeats: int) -> list[Run]:
    """Start 4 workers for `mode` (the stack's daphne stays), run the job `repeats` times, stop them."""
    env = {**stack.env, "FETCH_SHARED_HOST_SLOTS": "1" if mode.shared else "0"}
    slug = mode.name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
    workers = [
        start_process(
            f"runworker {i}", stack.worker_argv, env=env, cwd=BASE_DIR, log_path=stack.workdir / f"{slug}-worker{i}.log"
        )
        for i in range(WORKERS)
    ]
    stack.workers = workers  # run_job samples their CPU (and the first one's RSS)
    runs: list[Run] = []
    try:
        await asyncio.sleep(3)  # the workers are up
        procs = [psutil.Process(p.pid) for p in workers]
        options = {"per_host": mode.per_host}
        await stack.run_job(make_urls(target_url, 200), 200, fields=options)  # warm-up
        for _ in range(repeats):
            await _reset(target_url)
            cpu0 = sum(_cpu(p) for p in procs)
            figures = await stack.run_job(make_urls(target_url, n), 200, fields=options)
            cpu = sum(_cpu(p) for p in procs) - cpu0
            assert figures.status == "completed" and figures.succeeded == n, figures
            runs.append(Run(figures.seconds, await _peak(target_url), cpu * 1000 / n))
            print(f"  {mode.name:20} {figures.seconds:.2f} s, peak {runs[-1].peak}", flush=True)
    finally:
        for process in workers:
            await asyncio.to_thread(process.stop, timeout=20)
    return runs


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def _reset(base: str) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.post(base + "/stats/reset") as response:
        await response.read()


async def _peak(base: str) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(base + "/stats") as response:
        return int((await response.json())["peak_in_flight"])


def render(results: dict[Mode, list[Run]], *, n: int) -> str:
    lines = [
        (
            f"### Politeness: {WORKERS} workers, one host, per_host {PER_HOST}, {n} URLs of {DELAY_MS} ms"
            f" (median of {len(next(iter(results.values())))} runs, PostgreSQL)"
        ),
        "",
        "| slots | seconds | URLs/s | peak in flight | worker CPU ms/URL (4 summed) | runs (s) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for mode, runs in results.items():
        median = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
        cpu = statistics.median(r.cpu_ms_per_url for r in runs)
        spread = ", ".join(f"{r.seconds:.2f}" for r in runs)
        lines.append(f"| {mode.name} | {median.seconds:.2f} | {n / median.seconds:.0f} | {max(r.peak for r in runs)}"
                     f" | {cpu:.3f} | {spread} |")  # fmt: skip
    shared, fair = (sorted(results[m], key=lambda r: r.seconds)[len(results[m]) // 2] for m in MODES[:2])
    lines += ["", (f"Overhead of the shared slots against per-worker slots of the same total (8 in flight):"
                  f" {(shared.seconds / fair.seconds - 1) * 100:+.1f} % in time.")]  # fmt: skip
    return "\n".join(lines)


async def main_async(*, n: int = N, repeats: int = REPEATS, write_results: bool = True) -> int:
    from bench.__main__ import Target

    redis_url, pg_url = os.environ.get("REDIS_URL"), os.environ.get("TEST_POSTGRES_URL")
    if not redis_url or not pg_url:
        print("REDIS_URL and TEST_POSTGRES_URL must be set: run it under scripts/testenv.py")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="batchfetch-bench-polite-"))
    target = Target(DELAY_MS, workdir)
    started = time.monotonic()
    results: dict[Mode, list[Run]] = {}
    try:
        print(f"politeness ({WORKERS} workers, one host, per_host {PER_HOST}):", flush=True)
        # No worker of the stack's own: each mode starts its four.
        async with Stack(name="politeness", database_url=pg_url, redis_url=redis_url, workdir=workdir / "stack",
                         worker_concurrency=200, workers=0) as stack:  # fmt: skip
            for mode in MODES:
                results[mode] = await run_mode(mode, stack, target_url=target.base_url, n=n, repeats=repeats)
    finally:
        target.process.stop(timeout=10)
    text = render(results, n=n)
    print(f"\n{text}\n({time.monotonic() - started:.0f} s)")
    if write_results:
        report.write_section(BASE_DIR / "bench" / "results.md", "politeness", text)
        print("written to bench/results.md")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=N)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(n=args.n, repeats=args.repeats, write_results=not args.no_write)))


if __name__ == "__main__":
    main()
