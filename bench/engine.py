"""The fetch engine alone (no Django, no database): client shapes behind the httpx API.

    python -m bench.engine --base http://127.0.0.1:P --n N --c C [--loop asyncio|uvloop] [--variant ...]

Runs `jobs.engine.pipeline.fetch_all` (what the worker runs) over the same URLs as the
baselines with each client variant, and prints one JSON line per variant:
seconds and CPU seconds of this process. This is where the client is the
bottleneck, so it is where transports, pool shapes and event loops are compared
(`make bench` runs it too; see bench/results.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport

from bench.baselines import run_aiohttp, urls
from jobs.engine.client import FetchClient, make_client
from jobs.engine.pipeline import fetch_all
from jobs.engine.values import FetchResult


def _httpx_aiohttp(concurrency: int, client_class: type[httpx.AsyncClient]) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    transport = AiohttpTransport(limits=limits, trust_env=False)
    return client_class(transport=transport, timeout=30, follow_redirects=False, trust_env=False)


VARIANTS: dict[str, Callable[[int], httpx.AsyncClient] | None] = {
    # The baseline script's loop, in this process, for reference.
    "bare-aiohttp": None,
    # The worker's client before issue 6: httpx.AsyncClient (with its cookie jar) on httpx_aiohttp's transport.
    "httpx+httpx_aiohttp": lambda c: _httpx_aiohttp(c, httpx.AsyncClient),
    # The same without the cookie jar.
    "FetchClient+httpx_aiohttp": lambda c: _httpx_aiohttp(c, FetchClient),
    # What the worker uses now: client.make_client (FetchClient on LeanAiohttpTransport).
    "FetchClient+lean": lambda c: make_client(max_connections=c),
}


async def run_variant(name: str, targets: list[str], concurrency: int) -> dict[str, Any]:
    factory = VARIANTS[name]
    results: list[FetchResult] = []
    cpu0, started = time.process_time(), time.perf_counter()
    if factory is None:
        await run_aiohttp(targets, concurrency, [0])
        ok = len(targets)
    else:
        async with factory(concurrency) as client:
            await fetch_all(
                client, enumerate(targets), concurrency=concurrency, timeout=30, on_result=results.append
            )
        ok = sum(1 for r in results if r.outcome == "succeeded")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
    return {"variant": name, "n": len(targets), "c": concurrency, "ok": ok, "seconds": seconds, "cpu_seconds": cpu}


def new_loop(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--c", type=int, default=200)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="default: all")
    args = parser.parse_args(argv)
    targets = urls(args.base, args.n)
    for name in args.variant or list(VARIANTS):
        with asyncio.Runner(loop_factory=new_loop(args.loop)) as runner:
            result = runner.run(run_variant(name, targets, args.c))
        result["loop"] = args.loop
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
