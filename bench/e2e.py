"""The end-to-end run: daphne + `runworker` as real processes, driven over HTTP and WebSocket.

`Stack` migrates a database, creates the bench user, starts daphne and one
worker on it, and logs in like a browser. `Stack.run_job()` submits one job
through `POST /api/jobs/`, watches it on `/ws/jobs/<id>/` with one or more
WebSocket clients until the job is final, samples the worker's CPU and RSS
meanwhile (psutil), and returns the figures of that cell.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from yarl import URL

from scripts.localservices import LOOPBACK, ManagedProcess, free_port, start_process, wait_for_port

BASE_DIR = Path(__file__).resolve().parent.parent
TERMINAL = {"completed", "cancelled", "failed"}
USERNAME = "bench"
CONNECTING = 20
"""WebSocket handshakes in progress at once, at most."""


@dataclass
class JobFigures:
    """What one end-to-end job measured."""

    n: int
    c: int
    watchers: int
    submit_seconds: float
    """POST /api/jobs/ until its answer."""
    web_stall_ms: float
    """Slowest answer of a cheap GET sent every 50 ms to the web process while the POST ran."""
    seconds: float
    """POST sent until a watcher saw the job final."""
    status: str
    succeeded: int
    failed: int
    worker_cpu_seconds: float
    """User + system time of the `runworker` processes over the job, summed."""
    worker_rss_start_mb: float
    worker_rss_peak_mb: float
    worker_rss_end_mb: float
    progress_messages: int
    """Progress messages received by the first watcher."""
    latencies_ms: list[float] = field(repr=False)
    """Row fetched_at -> message received, over every row in every message of every watcher."""
    watchers_final: int
    """Watchers whose last message had the final counts."""
    reconnects: int
    """WebSocket reconnects over all watchers (a socket the server dropped)."""
    timeline: dict[str, float] = field(default_factory=dict, repr=False)
    """Seconds from sending the POST (wall clock) to the job's created_at, started_at, finished_at, and to a
    watcher seeing it final: where a job's time goes (the same machine's clock on both sides)."""

    @property
    def latency_p50(self) -> float:
        return _percentile(self.latencies_ms, 50)

    @property
    def latency_p95(self) -> float:
        return _percentile(self.latencies_ms, 95)


def _timeline(job: dict[str, Any], posted_at: float, seen_at: float) -> dict[str, float]:
    """Seconds from the POST to the job's timestamps and to the watcher seeing it final (JobFigures.timeline)."""
    stamps = ("created_at", "started_at", "finished_at")
    found = {key: datetime.fromisoformat(job[key]).timestamp() - posted_at for key in stamps if job.get(key)}
    return {**found, "seen": seen_at - posted_at}


def _percentile(values: list[float], pct: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def _django_env(database_url: str, redis_url: str, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "DJANGO_DEBUG": "0",  # as in production: DEBUG records every query in memory
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(40),
            "FETCH_ALLOW_PRIVATE_ADDRESSES": "1",
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "BATCHFETCH_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


class Stack:
    """daphne and `workers` `runworker` processes (one by default; 0: the caller starts its own) on one database;
    use `async with`."""

    def __init__(
        self,
        *,
        name: str,
        database_url: str,
        redis_url: str,
        workdir: Path,
        worker_concurrency: int,
        worker_args: tuple[str, ...] = (),
        extra_env: dict[str, str] | None = None,
        workers: int = 1,
        username: str = USERNAME,
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.env = _django_env(database_url, redis_url, extra_env or {})
        self.worker_argv = [
            sys.executable, "manage.py", "runworker", "--concurrency", str(worker_concurrency), *worker_args,
        ]  # fmt: skip
        self.password = secrets.token_urlsafe(16)
        self.username = username
        """The bench user it creates and logs in as (a database shared by several stacks needs one each)."""
        self.base_url = ""
        self.processes: list[ManagedProcess] = []
        self.daphne: ManagedProcess | None = None
        self.worker_count = workers
        self.workers: list[ManagedProcess] = []
        """The `runworker` processes; their CPU is summed, RSS is the first one's."""
        self.session: aiohttp.ClientSession | None = None
        self._slowest_probe = 0.0
        self._connecting = asyncio.Semaphore(CONNECTING)

    async def __aenter__(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._prepare_database)
        port = free_port()
        self.base_url = f"http://{LOOPBACK}:{port}"
        daphne = start_process(
            "daphne",
            [sys.executable, "-m", "daphne", "-b", LOOPBACK, "-p", str(port), "project.asgi:application"],
            env=self.env, cwd=BASE_DIR, log_path=self.workdir / "daphne.log",
        )  # fmt: skip
        self.processes.append(daphne)
        self.daphne = daphne
        for i in range(self.worker_count):
            name = "worker.log" if i == 0 else f"worker-{i + 1}.log"
            worker = start_process("runworker", self.worker_argv, env=self.env, cwd=BASE_DIR, log_path=self.workdir / name)
            self.workers.append(worker)
            self.processes.append(worker)
        await asyncio.to_thread(wait_for_port, LOOPBACK, port, timeout=60, process=daphne)
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        await self._login()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.session is not None:
            await self.session.close()
        for process in reversed(self.processes):
            await asyncio.to_thread(process.stop, timeout=20)

    def _manage(self, *args: str, env: dict[str, str] | None = None) -> None:
        subprocess.run(
            [sys.executable, "manage.py", *args], env=env or self.env, cwd=BASE_DIR, check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def _prepare_database(self) -> None:
        self._manage("migrate", "--noinput")
        env = dict(self.env, DJANGO_SUPERUSER_PASSWORD=self.password)
        email = f"{self.username}@example.com"
        self._manage("createsuperuser", "--noinput", "--username", self.username, "--email", email, env=env)

    def url(self, path: str) -> str:
        return self.base_url + path

    def cookie(self, name: str) -> str:
        assert self.session is not None
        morsel = self.session.cookie_jar.filter_cookies(URL(self.url("/"))).get(name)
        return morsel.value if morsel else ""

    async def _login(self) -> None:
        assert self.session is not None
        async with self.session.get(self.url("/accounts/login/")) as response:
            page = await response.text()
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if not match:
            raise RuntimeError(f"{self.name}: no CSRF token on the login page ({response.status})")
        form = {"username": self.username, "password": self.password, "csrfmiddlewaretoken": match.group(1)}
        async with self.session.post(self.url("/accounts/login/"), data=form, allow_redirects=False) as response:
            if response.status != 302:
                raise RuntimeError(f"{self.name}: login failed with {response.status}")

    # --- one job ------------------------------------------------------------------------

    async def run_job(
        self, urls: list[str], concurrency: int, *, watchers: int = 1, fields: dict[str, Any] | None = None
    ) -> JobFigures:
        """Submit `urls` as one job, watch it to its end, return the figures.

        `fields`: more submission fields (a job-level request; `requests` replaces `urls`)."""
        assert self.session is not None and self.workers
        procs = [psutil.Process(worker.pid) for worker in self.workers]
        proc = procs[0]
        rss_start = proc.memory_info().rss
        cpu0 = sum(map(cpu_seconds, procs))
        sampler = RssSampler(proc)
        sampling = asyncio.create_task(sampler.run())
        started, posted_at = time.perf_counter(), time.time()
        job, submit_seconds, stall_ms = await self._submit(urls, concurrency, fields or {})
        watches = [Watch() for _ in range(watchers)]
        try:
            async with asyncio.timeout(max(120.0, len(urls) / 200)):
                await asyncio.gather(*(self._watch(job["id"], watch) for watch in watches))
        finally:
            sampling.cancel()
        seconds = min(w.final_at for w in watches if w.final_at) - started
        seen_at = posted_at + seconds
        cpu = sum(map(cpu_seconds, procs)) - cpu0
        status, final = await self._get_json(f"/api/jobs/{job['id']}/")
        assert status == 200, final
        total_final = final["succeeded"] + final["failed"] + final["cancelled"]
        return JobFigures(
            n=len(urls),
            c=concurrency,
            watchers=watchers,
            submit_seconds=submit_seconds,
            web_stall_ms=stall_ms,
            seconds=seconds,
            status=final["status"],
            succeeded=final["succeeded"],
            failed=final["failed"],
            worker_cpu_seconds=cpu,
            worker_rss_start_mb=rss_start / 2**20,
            worker_rss_peak_mb=max(sampler.peak, rss_start) / 2**20,
            worker_rss_end_mb=proc.memory_info().rss / 2**20,
            progress_messages=watches[0].messages,
            latencies_ms=[lat for w in watches for lat in w.latencies_ms],
            reconnects=sum(w.reconnects for w in watches),
            timeline=_timeline(final, posted_at, seen_at),
            watchers_final=sum(
                1 for w in watches
                if w.last_job is not None and w.last_job["status"] == final["status"]
                and w.last_job["done"] == total_final == len(urls)
            ),
        )  # fmt: skip

    async def _submit(
        self, urls: list[str], concurrency: int, fields: dict[str, Any]
    ) -> tuple[dict[str, Any], float, float]:
        """POST the job; meanwhile probe the web process every 50 ms. Returns (job, seconds, slowest probe ms)."""
        assert self.session is not None
        # One target host: per_host = C, so the job's concurrency is the only cap (as the baselines have).
        submission = {
            "urls": urls, "concurrency": concurrency, "per_host": concurrency, "timeout": 30, "name": f"bench {len(urls)}",
            **fields,
        }
        if "requests" in submission:
            del submission["urls"]
        body = json.dumps(submission)
        headers = {"X-CSRFToken": self.cookie("csrftoken"), "Content-Type": "application/json"}
        probe = asyncio.create_task(self._probe())
        started = time.perf_counter()
        async with self.session.post(self.url("/api/jobs/"), data=body, headers=headers) as response:
            job = await response.json()
            if response.status != 201:
                raise RuntimeError(f"{self.name}: POST /api/jobs/ answered {response.status}: {str(job)[:500]}")
        seconds = time.perf_counter() - started
        probe.cancel()
        await asyncio.gather(probe, return_exceptions=True)
        return job, seconds, self._slowest_probe * 1000

    async def _probe(self) -> None:
        """A cheap GET every 50 ms; remembers the slowest answer."""
        assert self.session is not None
        self._slowest_probe = 0.0
        while True:
            t0 = time.perf_counter()
            async with self.session.get(self.url("/api/jobs/?limit=1")) as response:
                await response.read()
            self._slowest_probe = max(self._slowest_probe, time.perf_counter() - t0)
            await asyncio.sleep(0.05)

    async def _get_json(self, path: str) -> tuple[int, Any]:
        assert self.session is not None
        async with self.session.get(self.url(path)) as response:
            return response.status, await response.json()

    async def _watch(self, job_id: str, watch: Watch) -> None:
        """Follow /ws/jobs/<id>/ until the job is final, reconnecting with backoff (as the page does)."""
        backoff = 0.5
        while not watch.final_at:
            try:
                await self._watch_once(job_id, watch)
            except aiohttp.ClientError:
                pass
            if not watch.final_at:
                watch.reconnects += 1
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, 8.0)

    async def _watch_once(self, job_id: str, watch: Watch) -> None:
        assert self.session is not None
        ws_url = "ws" + self.url(f"/ws/jobs/{job_id}/").removeprefix("http")
        # Browsers arrive over time, not all in the same millisecond: at most CONNECTING handshakes at once.
        async with self._connecting:
            ws = await self.session.ws_connect(ws_url, origin=self.base_url, max_msg_size=0)
        async with ws:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    return
                received = time.time()
                data = json.loads(message.data)
                if data.get("type") == "progress":
                    watch.messages += 1
                    for row in data.get("results") or ():
                        if row.get("fetched_at"):
                            at = datetime.fromisoformat(row["fetched_at"]).timestamp()
                            watch.latencies_ms.append((received - at) * 1000)
                job = data.get("job")
                if job is not None:
                    watch.last_job = job
                    if job["status"] in TERMINAL:
                        watch.final_at = time.perf_counter()
                        return


@dataclass
class Watch:
    """What one WebSocket watcher saw."""

    messages: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    last_job: dict[str, Any] | None = None
    final_at: float = 0.0
    reconnects: int = 0
    """Times the socket dropped before the job was final (the server closed it)."""


class RssSampler:
    """Samples a process's RSS every 0.25 s; `peak` is the highest seen."""

    def __init__(self, proc: psutil.Process) -> None:
        self.proc = proc
        self.peak = 0

    async def run(self) -> None:
        while True:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            await asyncio.sleep(0.25)


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system time of `proc` so far."""
    times = proc.cpu_times()
    return float(times.user + times.system)
