"""A loopback target that records and echoes every request: method, path, headers, body.

For the request tests (issue 14): it answers any method, so tests can assert
what a job really sent, and how often. Runs on its own loop in a background
thread, like tests/target.py's TargetServer::

    with EchoServer() as echo:
        url = echo.url("/echo/a")
        ...
        assert echo.seen()[0].method == "POST"

Endpoints (any method):
    /echo/<anything>            200, a JSON echo of the request
    /status/<code>              that status
    /redirect/<code>?to=<url>   <code> with Location: <url>
    /prg                        POST: 303 to itself; other methods: the echo (Post/Redirect/Get)
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from aiohttp import web

from tests.target import BackgroundServer


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as the target received it."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)


def build_app(seen: list[Seen], lock: threading.Lock) -> web.Application:
    async def record(request: web.Request) -> Seen:
        body = await request.read()
        item = Seen(request.method, request.path_qs, tuple(request.headers.items()), body)
        with lock:
            seen.append(item)
        return item

    async def echo(request: web.Request) -> web.StreamResponse:
        item = await record(request)
        data = {"method": item.method, "path": item.path, "headers": dict(item.headers),
                "body": item.body.decode(errors="replace")}  # fmt: skip
        return web.Response(text=json.dumps(data), content_type="application/json")

    async def status(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.Response(status=int(request.match_info["code"]), text="status\n")

    async def redirect(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.Response(status=int(request.match_info["code"]), headers={"Location": request.query["to"]})

    async def prg(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            await record(request)
            return web.Response(status=303, headers={"Location": "/prg"})
        return await echo(request)

    app = web.Application()
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_route("*", r"/status/{code:\d{3}}", status)
    app.router.add_route("*", r"/redirect/{code:\d{3}}", redirect)
    app.router.add_route("*", "/prg", prg)
    return app


class EchoServer(BackgroundServer):
    """The echo target on a background thread with its own event loop; use as a context manager."""

    thread_name = "echo-server"

    def __init__(self, *, host: str = "127.0.0.1") -> None:
        super().__init__(host=host)
        self._seen: list[Seen] = []
        self._lock = threading.Lock()

    def app(self) -> web.Application:
        return build_app(self._seen, self._lock)

    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)
