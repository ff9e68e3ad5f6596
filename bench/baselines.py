"""The scripts users would write instead of Batchfetch, run on the same URLs.

    python -m bench.baselines aiohttp|httpx --base http://127.0.0.1:P --n N --c C [--time-limit S]

Each prints one JSON line: seconds, requests done, CPU seconds and peak RSS of
this process. They are the 20-line `asyncio.gather` + `Semaphore` scripts of
the tutorials, kept that plain on purpose:

* `aiohttp`: one `aiohttp.ClientSession` (its defaults: a 100-connection pool,
  raised to C so the pool is not the bottleneck; that is the practical limit
  for Python and the yardstick of the targets);
* `httpx`: `httpx.AsyncClient()` at the library's defaults, what a user of our
  packages writes first.

`--time-limit` stops a run that is far too slow (plain httpx under high
concurrency can take minutes); the result then says how many requests were
done, and the caller extrapolates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx


def urls(base: str, n: int) -> list[str]:
    """The N distinct URLs every run fetches (the end-to-end job gets the same list)."""
    return [f"{base}/ok/{i}" for i in range(n)]


async def run_aiohttp(targets: list[str], concurrency: int, done: list[int]) -> None:
    semaphore = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def fetch(url: str) -> None:
            async with semaphore:
                async with session.get(url) as response:
                    await response.read()
            done[0] += 1

        await asyncio.gather(*(fetch(url) for url in targets))


async def run_httpx(targets: list[str], concurrency: int, done: list[int]) -> None:
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient() as client:

        async def fetch(url: str) -> None:
            async with semaphore:
                response = await client.get(url)
                response.raise_for_status()
            done[0] += 1

        await asyncio.gather(*(fetch(url) for url in targets))


RUNNERS: dict[str, Callable[[list[str], int, list[int]], Awaitable[None]]] = {
    "aiohttp": run_aiohttp,
    "httpx": run_httpx,
}


async def measure(kind: str, base: str, n: int, concurrency: int, time_limit: float) -> dict[str, Any]:
    """Run one baseline; return its figures (complete=False if the time limit cut it short)."""
    targets = urls(base, n)
    done = [0]
    cpu0, started = time.process_time(), time.perf_counter()
    complete = True
    try:
        async with asyncio.timeout(time_limit):
            await RUNNERS[kind](targets, concurrency, done)
    except TimeoutError:
        complete = False
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    return {
        "kind": kind,
        "n": n,
        "c": concurrency,
        "done": done[0],
        "complete": complete,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(RUNNERS))
    parser.add_argument("--base", required=True, help="the target's base URL, e.g. http://127.0.0.1:8123")
    parser.add_argument("--n", type=int, required=True, help="URLs to fetch")
    parser.add_argument("--c", type=int, required=True, help="requests in flight at most")
    parser.add_argument("--time-limit", type=float, default=120.0, help="give up after this many seconds")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.kind, args.base, args.n, args.c, args.time_limit))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
