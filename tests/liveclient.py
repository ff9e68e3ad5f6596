"""A logged-in HTTP and WebSocket client of the live stack (daphne + `runworker`), as a browser would be.

aiohttp (already a dependency) logs in through the login form, calls the JSON
API with the CSRF header, and follows a job on `/ws/jobs/<id>/` with the
session cookie and the site's Origin. Used by the end-to-end tests
(tests/e2e) and the recovery tests of the worker (tests/worker/test_recovery.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from yarl import URL

from tests.services import LiveStack

TERMINAL = {"completed", "cancelled", "failed"}


class Client:
    """A logged-in HTTP and WebSocket client, as a browser on the site would be."""

    def __init__(self, stack: LiveStack, session: aiohttp.ClientSession) -> None:
        self.stack = stack
        self.session = session

    @classmethod
    @asynccontextmanager
    async def logged_in(cls, stack: LiveStack, username: str, password: str) -> AsyncIterator[Client]:
        """Log in through /accounts/login/ and yield the client (cookies: sessionid, csrftoken)."""
        # unsafe=True: the cookie jar otherwise refuses cookies from an IP address such as 127.0.0.1.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            async with session.get(stack.url("/accounts/login/")) as response:
                assert response.status == 200, await response.text()
                page = await response.text()
            match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
            assert match, "no CSRF token in the login form"
            form = {"username": username, "password": password, "csrfmiddlewaretoken": match.group(1)}
            async with session.post(stack.url("/accounts/login/"), data=form, allow_redirects=False) as response:
                assert response.status == 302, f"login failed: {response.status} {await response.text()}"
            client = cls(stack, session)
            assert client.cookie("sessionid"), "no session cookie after login"
            yield client

    def cookie(self, name: str) -> str:
        morsel = self.session.cookie_jar.filter_cookies(URL(self.stack.url("/"))).get(name)
        return morsel.value if morsel else ""

    async def get_json(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.stack.url(path)) as response:
            return response.status, await response.json()

    async def post_json(self, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"X-CSRFToken": self.cookie("csrftoken")}
        async with self.session.post(self.stack.url(path), json=body, headers=headers) as response:
            return response.status, await response.json()

    async def get_jsonl(self, path: str) -> list[dict[str, Any]]:
        async with self.session.get(self.stack.url(path)) as response:
            assert response.status == 200, await response.text()
            return [json.loads(line) for line in (await response.text()).splitlines() if line.strip()]

    @asynccontextmanager
    async def job_socket(self, job_id: str) -> AsyncIterator[JobSocket]:
        url = f"{self.stack.ws_url}/ws/jobs/{job_id}/"
        async with self.session.ws_connect(url, origin=self.stack.base_url, heartbeat=None) as ws:
            yield JobSocket(ws, self.stack)


class JobSocket:
    """The messages of one `/ws/jobs/<id>/` connection, in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, stack: LiveStack) -> None:
        self.ws = ws
        self.stack = stack
        self.messages: list[dict[str, Any]] = []

    @property
    def job(self) -> dict[str, Any]:
        return self.messages[-1]["job"]

    async def receive(self, timeout: float) -> dict[str, Any]:
        """The next message; fails early (with the logs) if daphne or the worker died meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = await self.ws.receive(timeout=min(1.0, max(deadline - time.monotonic(), 0.01)))
                break
            except TimeoutError:
                self.stack.assert_alive()
                if time.monotonic() >= deadline:
                    raise
        assert message.type == aiohttp.WSMsgType.TEXT, f"socket closed or not text: {message}"
        data = json.loads(message.data)
        self.messages.append(data)
        return data

    async def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """Read messages until one satisfies `predicate`; return it."""
        async with asyncio.timeout(timeout):
            while True:
                data = await self.receive(timeout)
                if predicate(data):
                    return data

    async def until_terminal(self, timeout: float) -> dict[str, Any]:
        return await self.until(lambda data: data.get("job", {}).get("status") in TERMINAL, timeout)
