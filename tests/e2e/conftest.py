"""Fixtures of the end-to-end tests: a committed user (`credentials`) and the loopback target server; for the
browser tests Chromium, a browser context and a logged-in page on the live stack's dashboard (the harness is
described in test_browser.py). A module that needs another user or target defines its own."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.e2e.helpers import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, logged_in_page
from tests.services import LiveStack
from tests.target import TargetServer


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Chromium for one test (a launch takes well under a second; no state leaks between tests)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    async with async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(locale="en-US", timezone_id="UTC", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)
    yield context
    await context.close()


@pytest.fixture
def credentials(transactional_db: None, django_user_model: Any) -> tuple[str, str]:
    """A user committed to the test database, so daphne (another process) sees it."""
    password = secrets.token_urlsafe(16)
    django_user_model.objects.create_user(username="alice", password=password)
    return "alice", password


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer(delay_ms=0) as server:
        yield server


@pytest.fixture
async def page(context: BrowserContext, live_stack: LiveStack, credentials: tuple[str, str]) -> Page:
    """A logged-in page on the dashboard."""
    return await logged_in_page(context, live_stack, credentials)
