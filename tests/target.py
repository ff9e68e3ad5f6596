"""A loopback HTTP target for tests and benchmarks, built on aiohttp.web.

It counts requests and how many are in flight (and the peak of that), so tests
can assert concurrency bounds on the *server* side, where they really matter.

In-process, it runs on its own event loop in a background thread, so it works
with any test event loop and blocking reads of its counters are fine::

    with TargetServer(delay_ms=50) as target:
        url = target.url("/ok")
        ...
        assert target.stats().peak_in_flight == 10

As a separate process (prints its base URL on the first line, serves `/stats`)::

    python -m tests.target --port 0 --delay-ms 50 --body-bytes 512

Endpoints (each waits the default delay first, or `?delay=<ms>`):
    /ok, /ok/<anything>   200 with the default body (also to POST, whose body is read and dropped)
    /delay/<ms>           /ok after <ms> milliseconds
    /status/<code>        that status code
    /bytes/<n>            a body of n bytes
    /hang                 never answers
    /slow-body            trickles ?chunks=50 chunks of ?chunk_bytes=16 every ?interval_ms=100
    /reset                sends headers and half the body, then resets the connection
    /flaky/<n>            503 for the first n requests with the same ?key=, then 200
    /throttled/<n>        429 with `Retry-After: ?after=` (seconds, or "date" for an HTTP date 2 s ahead)
                          for the first n requests with the same ?key=, then 200
    /unavailable          503 with `Retry-After: ?after=` (seconds, default 1), forever
    /redirect/<n>         a chain of n 302 redirects ending at /ok (?code= picks the status)
    /loop/<a|b>           /loop/a redirects to /loop/b and back: a loop
    /redirect-to          302 to ?url= (anywhere)
    /gzip-bomb            ?mb= MiB of zeros (default 256), gzip-encoded (~1.1 MiB on the wire)
    /big-headers          ?kb= KiB of response headers (default 200), in 1 KiB headers
    /cookies              200 with two Set-Cookie headers and an X-Trace
    /robots.txt           ?-less: the robots text given to the app (`robots=`), else 404
    /storm/<anything>     a host that closes: every ?every=-th request (up to ?storms= times) answers 429 with
                          `Retry-After: ?after=` and closes the host for that long; requests arriving while it is
                          closed get 429 too, and are listed as `early` (see `TargetServer.storm()`)
    /stats                {"requests", "in_flight", "peak_in_flight"} (not counted); POST /stats/reset
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import collections
import email.utils
import functools
import json
import signal
import socket
import struct
import threading
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STORM_GRACE = 0.1
"""Seconds after a 429 during which other requests may still arrive at /storm: they were already on the wire."""


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of the server's request counters."""

    requests: int
    """Requests received since the last reset (`/stats` excluded)."""
    in_flight: int
    """Requests being handled now: from arrival until the response is fully written or the client went away."""
    peak_in_flight: int
    """Highest `in_flight` since the last reset."""


class RequestCounter:
    """Request counters, written on the server's loop and read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = self._in_flight = self._peak = 0
        self._paths: Counter[str] = Counter()
        self._arrivals: list[tuple[str, float]] = []

    def enter(self, path: str = "") -> None:
        with self._lock:
            self._paths[path] += 1
            self._arrivals.append((path, time.monotonic()))
            self._requests += 1
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def snapshot(self) -> Stats:
        with self._lock:
            return Stats(self._requests, self._in_flight, self._peak)

    def path_counts(self) -> Counter[str]:
        """Requests per path since the last reset (how often each URL was fetched)."""
        with self._lock:
            return Counter(self._paths)

    def arrivals(self) -> list[tuple[str, float]]:
        """(path, time.monotonic()) of each request since the last reset, in order of arrival."""
        with self._lock:
            return list(self._arrivals)

    def reset(self) -> None:
        """Zero the request count and restart the peak from what is in flight now."""
        with self._lock:
            self._arrivals.clear()
            self._paths.clear()
            self._requests = 0
            self._peak = self._in_flight


@functools.lru_cache(maxsize=4)
def gzip_bomb(mib: int) -> bytes:
    """`mib` MiB of zeros, gzip-compressed (~4.5 KiB per MiB: level 1 builds 256 MiB in ~1 s)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(1024 * 1024)
    return b"".join([*(compressor.compress(block) for _ in range(mib)), compressor.flush()])


def build_app(
    counter: RequestCounter, *, delay_ms: int = 0, body_bytes: int = 64, robots: str | None = None
) -> web.Application:
    """The target application.

    `delay_ms` is waited before every answer (but `/stats`) unless the URL says
    otherwise; `body_bytes` is the body size of `/ok` (and half that of `/reset`).
    """
    default_body = b"x" * body_bytes

    @web.middleware
    async def count_and_delay(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/stats"):
            return await handler(request)
        counter.enter(request.path)
        try:
            delay = int(request.match_info.get("ms") or request.query.get("delay") or delay_ms)
            if delay:
                await asyncio.sleep(delay / 1000)
            response = await handler(request)
            # Write the whole response here, so `in_flight` covers sending the body too.
            await response.prepare(request)
            await response.write_eof()
            return response
        finally:
            counter.leave()

    async def ok(request: web.Request) -> web.StreamResponse:
        if request.can_read_body:
            await request.read()
        return web.Response(body=default_body, content_type="application/octet-stream")

    async def status(request: web.Request) -> web.StreamResponse:
        return web.Response(status=int(request.match_info["code"]), text="status\n")

    async def nbytes(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"x" * int(request.match_info["n"]), content_type="application/octet-stream")

    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.Event().wait()  # until the client goes away (handler cancellation is on)
        raise AssertionError("unreachable")

    async def slow_body(request: web.Request) -> web.StreamResponse:
        chunks = int(request.query.get("chunks", 50))
        chunk = b"x" * int(request.query.get("chunk_bytes", 16))
        interval = int(request.query.get("interval_ms", 100)) / 1000
        response = web.StreamResponse()
        response.content_length = chunks * len(chunk)
        await response.prepare(request)
        for _ in range(chunks):
            await response.write(chunk)
            await asyncio.sleep(interval)
        return response

    async def reset(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 2 * len(default_body) or 2
        await response.prepare(request)
        await response.write(default_body or b"x")
        await asyncio.sleep(0.05)  # let the client start reading the body
        transport = request.transport
        assert transport is not None
        # SO_LINGER with a zero timeout turns close() into a TCP RST.
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        raise asyncio.CancelledError  # the connection is gone: end the handler like a client disconnect does

    hits: collections.Counter[str] = collections.Counter()

    def hit(request: web.Request) -> int:
        """How many times this path and ?key= were requested, this one included."""
        key = f"{request.path}?{request.query.get('key', '')}"
        hits[key] += 1
        return hits[key]

    async def flaky(request: web.Request) -> web.StreamResponse:
        if hit(request) <= int(request.match_info["n"]):
            return web.Response(status=503, text="try again\n")
        return web.Response(text="finally\n")

    async def throttled(request: web.Request) -> web.StreamResponse:
        if hit(request) <= int(request.match_info["n"]):
            after = request.query.get("after", "1")
            if after == "date":
                # An HTTP date has 1 s resolution: 2 s ahead means a wait of 1-2 s.
                after = email.utils.formatdate(time.time() + 2, usegmt=True)
            return web.Response(status=429, text="slow down\n", headers={"Retry-After": after})
        return web.Response(text="welcome\n")

    async def unavailable(request: web.Request) -> web.StreamResponse:
        retry_after = request.query.get("after", "1")
        return web.Response(status=503, text="come back later\n", headers={"Retry-After": retry_after})

    closed: dict[str, Any] = {"until": 0.0, "at": 0.0, "storms": 0, "seen": 0, "early": []}

    async def storm(request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        after = float(request.query.get("after", "1"))
        closed["seen"] += 1
        if now < closed["until"]:
            if now > closed["at"] + STORM_GRACE:
                closed["early"].append(round(now - closed["at"], 3))
        elif closed["storms"] < int(request.query.get("storms", "3")) and closed["seen"] % int(
            request.query.get("every", "20")
        ) == 0:
            closed.update(storms=closed["storms"] + 1, at=now, until=now + after)
        else:
            return web.Response(text="calm\n")
        return web.Response(status=429, text="storm\n", headers={"Retry-After": f"{after:g}"})

    async def redirect(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        code = int(request.query.get("code", 302))
        location = f"/redirect/{n - 1}?code={code}" if n > 1 else "/ok"
        return web.Response(status=code, headers={"Location": location})

    async def loop(request: web.Request) -> web.StreamResponse:
        other = "b" if request.match_info["side"] == "a" else "a"
        return web.Response(status=302, headers={"Location": f"/loop/{other}"})

    async def redirect_to(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": request.query["url"]})

    async def bomb(request: web.Request) -> web.StreamResponse:
        body = gzip_bomb(int(request.query.get("mb", 256)))
        return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})

    async def big_headers(request: web.Request) -> web.StreamResponse:
        kib = int(request.query.get("kb", 200))
        return web.Response(text="ok\n", headers={f"X-Filler-{i}": "f" * 1000 for i in range(kib)})

    async def cookies(request: web.Request) -> web.StreamResponse:
        headers = [("Set-Cookie", "session=s3cr3t; HttpOnly"), ("Set-Cookie", "theme=dark"), ("X-Trace", "t-1")]
        return web.Response(text="ok\n", headers=CIMultiDict(headers))

    async def robots_txt(request: web.Request) -> web.StreamResponse:
        if robots is None:
            return web.Response(status=404, text="no robots here\n")
        return web.Response(text=robots)

    async def stats(request: web.Request) -> web.StreamResponse:
        return web.json_response(asdict(counter.snapshot()))

    async def storm_stats(request: web.Request) -> web.StreamResponse:
        return web.json_response({key: closed[key] for key in ("storms", "seen", "early")})

    async def stats_reset(request: web.Request) -> web.StreamResponse:
        counter.reset()
        return web.json_response(asdict(counter.snapshot()))

    app = web.Application(middlewares=[count_and_delay])
    app.router.add_get("/ok", ok)
    app.router.add_get("/ok/{tail:.*}", ok)
    app.router.add_post("/ok", ok)  # the requests bench (bench/requests.py) POSTs
    app.router.add_post("/ok/{tail:.*}", ok)
    app.router.add_get(r"/delay/{ms:\d+}", ok)
    app.router.add_get(r"/status/{code:\d{3}}", status)
    app.router.add_get(r"/bytes/{n:\d+}", nbytes)
    app.router.add_get("/hang", hang)
    app.router.add_get("/slow-body", slow_body)
    app.router.add_get("/reset", reset)
    app.router.add_get(r"/flaky/{n:\d+}", flaky)
    app.router.add_get(r"/throttled/{n:\d+}", throttled)
    app.router.add_get("/unavailable", unavailable)
    app.router.add_get(r"/redirect/{n:\d+}", redirect)
    app.router.add_get("/loop/{side:[ab]}", loop)
    app.router.add_get("/redirect-to", redirect_to)
    app.router.add_get("/gzip-bomb", bomb)
    app.router.add_get("/big-headers", big_headers)
    app.router.add_get("/cookies", cookies)
    app.router.add_get("/robots.txt", robots_txt)
    app.router.add_get("/storm/{tail:.*}", storm)
    app.router.add_get("/stats", stats)
    app.router.add_get("/stats/storm", storm_stats)
    app.router.add_post("/stats/reset", stats_reset)
    return app


async def start_runner(app: web.Application, *, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port (0: any free port); return the runner and the bound port."""
    # handler_cancellation: a handler ends when its client disconnects, so `in_flight` drops at once;
    # a short shutdown_timeout keeps stop() fast while /hang handlers are still waiting.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    return runner, runner.addresses[0][1]


class BackgroundServer(abc.ABC):
    """An aiohttp app (`app()`) served on a background thread with its own event loop; a context manager."""

    thread_name = "loopback-server"

    def __init__(self, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.base_url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @abc.abstractmethod
    def app(self) -> web.Application:
        """The application to serve (built on the server's thread, at start)."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Self:
        """Start serving; return once the port is bound."""
        self._thread = threading.Thread(target=self._serve, name=self.thread_name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError(f"{self.thread_name} failed to start") from self._error
        return self

    def stop(self) -> None:
        """Stop serving and join the thread (open connections are closed)."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()

    def url(self, path: str) -> str:
        return self.base_url + path

    def _serve(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            runner, port = loop.run_until_complete(start_runner(self.app(), host=self.host))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self.base_url = f"http://{self.host}:{port}"
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


class TargetServer(BackgroundServer):
    """The target on a background thread with its own event loop; use as a context manager."""

    thread_name = "target-server"

    def __init__(
        self, *, delay_ms: int = 0, body_bytes: int = 64, host: str = "127.0.0.1", robots: str | None = None
    ) -> None:
        super().__init__(host=host)
        self.delay_ms = delay_ms
        self.body_bytes = body_bytes
        self.robots = robots
        self._counter = RequestCounter()

    def app(self) -> web.Application:
        return build_app(self._counter, delay_ms=self.delay_ms, body_bytes=self.body_bytes, robots=self.robots)

    def stats(self) -> Stats:
        return self._counter.snapshot()

    def path_counts(self) -> Counter[str]:
        return self._counter.path_counts()

    def reset_stats(self) -> None:
        self._counter.reset()

    def arrivals(self) -> list[tuple[str, float]]:
        return self._counter.arrivals()

    def storm(self) -> dict[str, Any]:
        """The /storm endpoint's record: {"storms": closings, "seen": requests, "early": [seconds after a
        closing at which a request arrived while the host was closed, beyond STORM_GRACE]}."""
        with urllib.request.urlopen(self.url("/stats/storm"), timeout=5) as response:  # loopback only
            return dict(json.loads(response.read()))

    def wait_for(self, predicate: Callable[[Stats], bool], timeout: float = 5.0) -> Stats:
        """Poll the stats until `predicate` holds; raise AssertionError with the last stats after `timeout`."""
        deadline = time.monotonic() + timeout
        while not predicate(stats := self.stats()):
            if time.monotonic() > deadline:
                raise AssertionError(f"target stats never matched: {stats}")
            time.sleep(0.005)
        return stats


async def _main(args: argparse.Namespace) -> None:
    app = build_app(RequestCounter(), delay_ms=args.delay_ms, body_bytes=args.body_bytes)
    runner, port = await start_runner(app, host=args.host, port=args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"http://{args.host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Command line: serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tests.target", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument(
        "--delay-ms", type=int, default=0, help="delay before every answer, unless the URL says otherwise"
    )
    parser.add_argument("--body-bytes", type=int, default=64, help="body size of /ok")
    asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
