"""The bench's table, the machine description, and bench/results.md."""

from __future__ import annotations

import math
import os
import platform
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.e2e import JobFigures

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
PACKAGES = ("Django", "channels", "daphne", "channels-redis", "httpx", "httpx-aiohttp", "aiohttp", "psycopg", "uvloop")


@dataclass
class Row:
    db: str
    delay_ms: int
    ours: JobFigures
    """The median run of the cell."""
    peak_in_flight: int
    baselines: dict[str, dict[str, Any]]
    """Per baseline, its (median) run; the aiohttp one's "runs" lists the seconds of each run."""
    ours_runs: list[float] = field(default_factory=list)
    """Seconds of each of our runs of the cell."""


@dataclass
class WatchRow:
    db: str
    delay_ms: int
    ours: JobFigures


@dataclass
class FleetRow:
    workers: int
    delay_ms: int
    ours: JobFigures
    """The one job, shared by `workers` workers; worker_cpu_seconds is their sum."""
    target_cpu_seconds: float = float("nan")
    """CPU time of the target server (the loopback HTTP server) over the job."""
    cores_busy: float = float("nan")
    """The machine's busy CPU time over the job's seconds, every process (others' too): 2.0 = both cores full."""


def describe_machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    pg = "?"
    try:
        pg = subprocess.run(["postgres", "--version"], capture_output=True, text=True, check=False).stdout.strip() or pg
    except OSError:
        from scripts.localservices import postgres_bindir

        bindir = postgres_bindir()
        if bindir is not None:
            pg = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()
    return (
        f"- {time.strftime('%Y-%m-%d %H:%M %Z')}; {os.cpu_count()} CPUs (nproc), {cpu}; {platform.platform()}\n"
        f"- Python {sys.version.split()[0]}; SQLite {sqlite3.sqlite_version}; {pg}\n"
        f"- {', '.join(versions)}\n"
        f"- load average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def _fmt(value: float, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _baseline_s(b: dict[str, Any]) -> str:
    return ("" if b["complete"] else "~") + _fmt(b["seconds"])


HEADER = (
    "| db | N | C | delay ms | aiohttp s | httpx s | ours s | ours/aiohttp | ideal s | req/s | "
    "CPU s/1k ours | aiohttp | httpx | RSS MB start/peak/end | DB rows/s | submit s | web stall ms | "
    "msgs/s | latency p50/p95 ms | WS drops | peak in-flight | runs: ours s, aiohttp s |"
)


def _row(r: Row) -> str:
    o, a, h = r.ours, r.baselines["aiohttp"], r.baselines["httpx"]
    ideal = math.ceil(o.n / o.c) * r.delay_ms / 1000
    per_k = 1000 / o.n
    ok = "" if o.status == "completed" and o.succeeded == o.n else f" ({o.status}, {o.succeeded} ok)"
    cells = [
        r.db, f"{o.n:,}", str(o.c), str(r.delay_ms), _baseline_s(a), _baseline_s(h), _fmt(o.seconds) + ok,
        _fmt(a["seconds"] / o.seconds), _fmt(ideal), f"{o.n / o.seconds:,.0f}",
        _fmt(o.worker_cpu_seconds * per_k, 3), _fmt(a["cpu_seconds"] * per_k, 3), _fmt(h["cpu_seconds"] * per_k, 3),
        f"{o.worker_rss_start_mb:.0f}/{o.worker_rss_peak_mb:.0f}/{o.worker_rss_end_mb:.0f}",
        f"{o.n / o.seconds:,.0f}", _fmt(o.submit_seconds), f"{o.web_stall_ms:.0f}",
        _fmt(o.progress_messages / o.seconds, 1), f"{o.latency_p50:.0f}/{o.latency_p95:.0f}", str(o.reconnects),
        str(r.peak_in_flight), _runs(r),
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def _runs(r: Row) -> str:
    """How many runs the cell's figures are the median of, and the range of each side's seconds."""
    spans = [sorted(seconds) for seconds in (r.ours_runs, r.baselines["aiohttp"].get("runs", [])) if seconds]
    if not spans or len(spans[0]) < 2:
        return "1"
    return f"{len(spans[0])}: " + ", ".join(f"{_fmt(s[0])}-{_fmt(s[-1])}" for s in spans)


def render_engine(engine: list[dict[str, Any]]) -> list[str]:
    """The client variants table: CPU per URL relative to bare aiohttp on the same loop."""
    if not engine:
        return []
    bare = {r["loop"]: r["cpu_seconds"] / r["n"] for r in engine if r["variant"] == "bare-aiohttp"}
    n, c = engine[0]["n"], engine[0]["c"]
    lines = [
        "",
        f"The fetch engine alone (`python -m bench.engine`, jobs.engine.pipeline.fetch_all, no database), N={n:,}, C={c}, 0 ms:",
        "",
        "| client | loop | seconds | CPU ms/URL | CPU vs bare aiohttp |",
        "|---|---|---|---|---|",
    ]
    for r in engine:
        per_url = r["cpu_seconds"] / r["n"]
        lines.append(
            f"| {r['variant']} | {r['loop']} | {_fmt(r['seconds'])} | {_fmt(per_url * 1000, 3)} |"
            f" {_fmt(per_url / bare[r['loop']])} |"
        )
    return lines


def render_fleet(fleet: Sequence[FleetRow]) -> list[str]:
    """The fleet table: throughput and total CPU per URL against one worker's."""
    if not fleet:
        return []
    first = fleet[0]
    one = first.ours
    lines = [
        "",
        f"The fleet (PostgreSQL): one {one.n:,}-URL job shared by N `runworker` processes on this machine,"
        f" C={one.c // first.workers} each (the job's concurrency C x N), {first.delay_ms} ms per request:",
        "",
        "| workers | seconds | URLs/s | speed-up vs 1 | CPU s/1k URLs, all workers | CPU vs 1 | target server CPU s/1k"
        " | cores busy (machine) | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    one_rate, one_cpu = one.n / one.seconds, one.worker_cpu_seconds / one.n
    for r in fleet:
        o = r.ours
        rate, cpu = o.n / o.seconds, o.worker_cpu_seconds / o.n
        lines.append(
            f"| {r.workers} | {_fmt(o.seconds)} | {rate:,.0f} | {_fmt(rate / one_rate)} | {_fmt(cpu * 1000, 3)} |"
            f" {cpu / one_cpu - 1:+.0%} | {_fmt(r.target_cpu_seconds * 1000 / o.n, 3)} | {_fmt(r.cores_busy)} |"
            f" {o.status}, {o.succeeded:,} ok |"
        )
    return lines


def render(
    rows: list[Row],
    watch_rows: list[WatchRow],
    engine: list[dict[str, Any]],
    *,
    fleet: Sequence[FleetRow] = (),
    machine: str,
    elapsed: float,
    quick: bool,
) -> str:
    lines = [
        f"Machine:\n\n{machine}\n",
        "ours/aiohttp is throughput relative to the bare aiohttp script (aiohttp seconds / ours seconds; 1.0 = as"
        " fast). `~`: the baseline hit its time limit and its time is extrapolated. ours s runs from sending"
        " POST /api/jobs/ until a WebSocket watcher sees the job final (every row written); DB rows/s is final"
        " rows written per second over that span. Latency: the row's fetched_at (stamped when its batch is"
        " written) to the message's arrival at a WebSocket client on the same machine. web stall: the slowest"
        " GET /api/jobs/?limit=1 sent every 50 ms while the POST ran. Cells run more than once show their median"
        " run (ours and the aiohttp baseline each; the httpx baseline runs once), CPU as the median over the runs,"
        " and each side's range of seconds.\n",
        HEADER,
        "|" + "---|" * (HEADER.count("|") - 1),
        *(_row(r) for r in rows),
    ]
    for w in watch_rows:
        o = w.ours
        lines += [
            "",
            f"{o.watchers} WebSocket clients watching one {o.n:,}-URL job ({w.db}, C={o.c}, {w.delay_ms} ms):"
            f" {o.watchers_final}/{o.watchers} ended with the final counts; job {_fmt(o.seconds)} s"
            f" ({o.status}); {_fmt(o.progress_messages / o.seconds, 1)} msgs/s per client;"
            f" latency p50/p95 {o.latency_p50:.0f}/{o.latency_p95:.0f} ms over all clients;"
            f" worker CPU {_fmt(o.worker_cpu_seconds * 1000 / o.n, 3)} s/1k URLs; {o.reconnects} sockets dropped"
            " by the server and reopened.",
        ]
    lines += render_fleet(fleet)
    lines += render_engine(engine)
    lines += ["", f"`make bench{' --quick' if quick else ''}` took {elapsed:.0f} s; load average at the end:"
              f" {' '.join(f'{x:.2f}' for x in os.getloadavg())}."]  # fmt: skip
    return "\n".join(lines)


def write_section(path: Path, name: str, text: str) -> None:
    """Replace the block of cell `name` in `path` (between its markers), or append one."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text}\n{end}"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        path.write_text(head + block + rest.split(end, 1)[1])
    else:
        path.write_text(old.rstrip("\n") + "\n\n" + block + "\n")


def write_results(path: Path, text: str) -> None:
    """Replace the generated part of `path` (between the markers), keeping the notes around it."""
    block = f"{BEGIN}\n{text}\n{END}"
    if path.exists() and BEGIN in (old := path.read_text()) and END in old:
        head, rest = old.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        path.write_text(head + block + tail)
    else:
        path.write_text(f"# Benchmark results\n\nWritten by `make bench`.\n\n{block}\n")
