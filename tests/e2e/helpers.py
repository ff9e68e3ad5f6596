"""Shared helpers of the browser tests (test_browser.py and the others on the same harness): Chromium's
settings, logging in, reading the page's numbers, the JSON API through the page's session, polling."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

from playwright.async_api import BrowserContext, Page, expect

from tests.services import BASE_DIR, LiveStack

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
OUTPUT_DIR = BASE_DIR / "test-output"
# Generous: two cores are shared with daphne, the worker, Redis, the database and the browser.
WAIT_MS = 90_000


async def logged_in_page(context: BrowserContext, live_stack: LiveStack, credentials: tuple[str, str]) -> Page:
    page = await context.new_page()
    await page.goto(live_stack.url("/"))
    await expect(page).to_have_url(re.compile(r"/accounts/login/"))
    await page.get_by_label("Username").fill(credentials[0])
    await page.get_by_label("Password").fill(credentials[1])
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", name="New job")).to_be_visible()
    return page


async def number(page: Page, selector: str) -> int:
    return int((await page.locator(selector).inner_text()).replace(",", "").strip())


def job_id_of(page: Page) -> str:
    match = re.search(r"/jobs/([0-9a-f-]{36})/$", page.url)
    assert match, page.url
    return match.group(1)


async def api(page: Page, stack: LiveStack, path: str) -> Any:
    response = await page.request.get(stack.url(path))
    assert response.ok, await response.text()
    return await response.json()


async def poll(predicate: Callable[[], Any], *, timeout: float, what: str, stack: LiveStack) -> Any:
    """Wait until `predicate()` (sync or async) is true; fail early with the logs if a process died."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        stack.assert_alive()
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.1)


async def submit_pasted(page: Page, urls: list[str], *, name: str, concurrency: int) -> str:
    await page.get_by_label("URLs", exact=True).fill("\n".join(urls))
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Concurrency").fill(str(concurrency))
    await page.get_by_role("button", name="Start job").click()
    await expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f-]{36}/$"))
    return job_id_of(page)
