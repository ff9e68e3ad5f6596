"""Monitoring in a real browser: create a schedule in the UI, watch its run history grow, open the changes panel.

Same setup as tests/e2e/test_browser.py (Playwright driving Debian's Chromium
against daphne + a `runworker` process); the schedule page's script keeps the
history live, under the strict CSP (a CSP violation or a script error fails the test).
"""

from __future__ import annotations

import asyncio
import re

import pytest
from playwright.async_api import Page, expect

from tests.e2e.helpers import api
from tests.services import LiveStack
from tests.target import TargetServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


async def test_create_a_schedule_watch_its_history_and_open_the_changes(
    page: Page, live_stack: LiveStack, target: TargetServer
) -> None:
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)

    await page.get_by_role("link", name="Schedules").click()
    await expect(page.get_by_role("heading", name="New schedule")).to_be_visible()
    await page.get_by_label("Name").fill("browser watch")
    await page.get_by_label("URLs").fill(f"{target.url('/ok')}\n{target.url('/status/404')}")
    await page.get_by_label("Runs").select_option("interval")
    await page.get_by_label("Seconds or cron expression").fill("0")
    await page.get_by_role("button", name="Create schedule").click()
    await expect(page.locator("#form-errors")).to_contain_text("interval: must be at least 1 second")

    await page.get_by_label("Seconds or cron expression").fill("3")
    await page.get_by_role("button", name="Create schedule").click()
    await expect(page.get_by_role("heading", name="browser watch")).to_be_visible()
    schedule_id = re.search(r"/schedules/(\d+)/$", page.url).group(1)  # type: ignore[union-attr]

    # No reload: the page's script adds the runs as the workers start them.
    await expect(page.locator("#runs-body tr")).to_have_count(1)
    await expect(page.locator("#runs-body tr")).to_have_count(2)
    await expect(page.locator("#runs-body tr").first.locator(".status")).to_have_text("completed")
    runs = await api(page, live_stack, f"/api/schedules/{schedule_id}/runs/")
    await expect(page.locator("#sparkline-line")).to_have_attribute("points", re.compile(r"\d"))
    assert runs["sparkline"]["max"] == 1  # one URL (the 404) fails in every run

    await page.get_by_role("button", name="Disable").click()
    await expect(page.locator("#schedule-state")).to_have_text("Disabled")
    latest = (await api(page, live_stack, f"/api/jobs/?schedule={schedule_id}"))["jobs"][0]
    # The newest run may still be going (or just ended): its changes are computed once a worker settles it.
    for _ in range(300):
        if (await api(page, live_stack, f"/api/jobs/{latest['id']}/changes/")).get("computed"):
            break
        await asyncio.sleep(0.1)
    await page.goto(live_stack.url(f"/jobs/{latest['id']}/"))
    panel = page.locator("#changes-panel")
    await panel.get_by_text("Changes since the previous run").click()
    counts = (await api(page, live_stack, f"/api/jobs/{latest['id']}/changes/"))["counts"]
    assert counts["unchanged"] == 2
    for kind, n in counts.items():
        await expect(panel.locator(f'dd[data-kind="{kind}"]')).to_have_text(str(n))
    await expect(panel.get_by_text("Nothing changed.")).to_be_visible()
    # The one expected: the form's deliberate 400 (interval 0) logs "Failed to load resource".
    assert [problem for problem in problems if "status of 400" not in problem] == []
