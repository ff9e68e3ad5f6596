"""The pages in a real browser: Playwright driving Debian's Chromium against the live stack.

daphne, a `runworker` process and Redis run as in production (the `live_stack`
fixture); the URLs point at the loopback target server in this process, which
counts requests. Chromium is /usr/bin/chromium (`make test` apt-gets it);
Playwright never downloads a browser. Every scenario ends by comparing what
the page shows with what the JSON API says.

A screenshot of the live page mid-job is saved as test-output/live-page.png.
The fixtures (Chromium, a logged-in `page`, the target server) are in
tests/e2e/conftest.py, the helpers the other browser tests share in
tests/e2e/helpers.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.e2e.helpers import OUTPUT_DIR, api, job_id_of, number, poll, submit_pasted
from tests.services import LiveStack
from tests.target import TargetServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# Result rows the page may keep in the DOM at once (the visible window plus its margins).
MAX_DOM_ROWS = 80


# --- helpers ---------------------------------------------------------------------------------


async def api_post(page: Page, stack: LiveStack, path: str, body: Any) -> Any:
    token = next(c["value"] for c in await page.context.cookies() if c["name"] == "csrftoken")
    response = await page.request.post(stack.url(path), data=body, headers={"X-CSRFToken": token})
    assert response.status == 201, await response.text()
    return await response.json()


async def dom_rows(page: Page) -> int:
    return int(await page.locator("#results-body tr[data-position]").count())


async def assert_page_matches_api(page: Page, stack: LiveStack, job_id: str) -> dict[str, Any]:
    """The page's numbers equal the API's (call once the job has settled: both are then final)."""
    job = await api(page, stack, f"/api/jobs/{job_id}/")
    await expect(page.locator("#job-status")).to_have_text(job["status"].capitalize())
    fetched = job["succeeded"] + job["failed"]  # the bar counts the URLs fetched, not the cancelled ones
    await expect(page.locator("#job-percent")).to_have_text(f"{fetched * 100 // job['total']}%")
    shown = {name: await number(page, f"#stat-{name}") for name in ("succeeded", "failed", "cancelled", "total",
                                                                     "pending")}
    expected = {name: job[name] for name in ("succeeded", "failed", "cancelled", "total")}
    expected["pending"] = job["total"] - job["done"]
    assert shown == expected
    assert await page.locator("#job-progress").get_attribute("aria-valuenow") == str(fetched)
    return job


# --- scenarios ---------------------------------------------------------------------------------


async def test_paste_watch_progress_to_100_percent_charts_filters_and_screenshot(
    page: Page, live_stack: LiveStack, target: TargetServer
) -> None:
    total = 400
    urls = [target.url("/status/404?delay=60") if i % 10 == 9 else target.url(f"/ok/{i}?delay=60") for i in range(total)]
    job_id = await submit_pasted(page, urls, name="browser paste", concurrency=4)
    await page.evaluate("window.__sameDocument = true")
    await expect(page.get_by_role("heading", name="browser paste")).to_be_visible()
    await expect(page.locator("#connection")).to_have_text("Live")

    # Mid-job: the progress moves without a reload; keep a screenshot of it.
    await poll(lambda: _at_least(page, "#stat-succeeded", total // 3), timeout=60, what="the job is under way",
               stack=live_stack)
    await expect(page.locator("#job-status")).to_have_text("Running")
    OUTPUT_DIR.mkdir(exist_ok=True)
    await page.screenshot(path=str(OUTPUT_DIR / "live-page.png"), full_page=True)
    assert (await page.locator("#stat-rate").inner_text()).endswith("URLs/s")
    assert await dom_rows(page) <= MAX_DOM_ROWS

    await expect(page.locator("#job-percent")).to_have_text("100%")
    await expect(page.locator("#job-status")).to_have_text("Completed")
    assert await page.evaluate("window.__sameDocument") is True  # no reload happened
    job = await assert_page_matches_api(page, live_stack, job_id)
    assert (job["succeeded"], job["failed"]) == (360, 40)
    await expect(page.locator("#stat-eta")).to_have_text("Done")

    # Charts: the status-code breakdown equals the API's stats; the throughput chart has bars.
    await expect(page.locator("#breakdown li", has_text="HTTP 200")).to_contain_text("360")
    await expect(page.locator("#breakdown li", has_text="HTTP 404")).to_contain_text("40")
    assert await page.locator("#throughput-chart rect.chart__bar").count() >= 1
    await expect(page.locator("#throughput-desc")).to_contain_text("400 URLs fetched")

    # Filters: failures only, then by status code, then a URL search; the DOM stays a window.
    results = page.locator("#results-body tr[data-position]")
    # The window's spacers assume a fixed row height (ROW_HEIGHT in job.js).
    heights = await results.evaluate_all("rows => rows.map(row => row.getBoundingClientRect().height)")
    assert heights and all(abs(height - 32) < 0.5 for height in heights), heights
    await page.get_by_label("Show").select_option("failed")
    await expect(page.locator("#results-count")).to_have_text("40 rows")
    await expect(results.first).to_contain_text("failed")
    # Every row shown is a failure (read again while the window re-renders as the job's last rows arrive).
    # (the newest row is a failure in both lists, so the old list can still be on screen for a frame).
    outcomes: set[str] = set()
    for _ in range(100):
        outcomes = set(await results.locator("td:nth-child(3)").all_inner_texts())
        if outcomes == {"failed"}:
            break
        await asyncio.sleep(0.1)
    assert outcomes == {"failed"}, await results.evaluate_all("rows => rows.map(r => r.innerText.slice(0, 120))")
    await page.get_by_label("Show").select_option("code:200")
    await expect(page.locator("#results-count")).to_have_text("360 rows")
    await expect(results.first).to_contain_text("succeeded")
    await page.get_by_label("Show").select_option("all")
    await page.get_by_label("Search URLs").fill("/ok/12")
    # /ok/12 and /ok/120-128 (the URL at 129 is a 404 one)
    await expect(page.locator("#results-count")).to_have_text("10 matching rows")
    found = await results.locator("td.results__url").all_inner_texts()
    assert len(found) == 10 and all("/ok/12" in url for url in found)

    # On a phone: nothing sticks out sideways but the results table, which scrolls in its own box.
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.get_by_label("Search URLs").fill("")
    OUTPUT_DIR.mkdir(exist_ok=True)
    await page.screenshot(path=str(OUTPUT_DIR / "live-page-phone.png"), full_page=True)
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


async def test_submit_by_file_upload_and_by_drag_and_drop(
    page: Page, live_stack: LiveStack, target: TargetServer
) -> None:
    body = "\n".join(["# my list", *[target.url(f"/ok/{i}") for i in range(30)]]).encode()
    await page.locator("#id_file").set_input_files(files=[{"name": "urls.txt", "mimeType": "text/plain",
                                                           "buffer": body}])
    await expect(page.locator("#drop-status")).to_contain_text("urls.txt")
    await page.get_by_role("button", name="Start job").click()
    await expect(page.get_by_role("heading", name="urls.txt")).to_be_visible()
    await expect(page.locator("#job-status")).to_have_text("Completed")
    job = await assert_page_matches_api(page, live_stack, job_id_of(page))
    assert (job["total"], job["succeeded"]) == (30, 30)

    # Drag and drop a CSV onto the drop zone: it becomes the file input's file.
    await page.goto(live_stack.url("/"))
    csv_text = "url,note\n" + "\n".join(f"{target.url(f'/ok/csv{i}')},x" for i in range(5))
    await page.evaluate(
        """([name, text]) => {
            const data = new DataTransfer();
            data.items.add(new File([text], name, {type: "text/csv"}));
            const zone = document.getElementById("drop-zone");
            zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true, cancelable: true}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
        }""",
        ["dropped.csv", csv_text],
    )
    await expect(page.locator("#drop-status")).to_contain_text("dropped.csv")
    await page.get_by_role("button", name="Start job").click()
    await expect(page.get_by_role("heading", name="dropped.csv")).to_be_visible()
    await expect(page.locator("#job-status")).to_have_text("Completed")
    assert (await assert_page_matches_api(page, live_stack, job_id_of(page)))["succeeded"] == 5


async def test_bad_input_shows_per_line_errors_and_keeps_the_text(page: Page, live_stack: LiveStack) -> None:
    text = "https://ok.example/\nftp://files.example/a\n\nnot a url\nhttps://fine.example/"
    textarea = page.get_by_label("URLs", exact=True)
    await textarea.fill(text)
    await page.get_by_role("button", name="Start job").click()
    summary = page.locator("#form-errors")
    await expect(summary).to_contain_text("The job was not created")
    await expect(summary).to_contain_text("line 2: scheme must be http or https, not 'ftp'")
    await expect(summary).to_contain_text("line 4: ")
    await expect(summary).to_be_focused()
    assert (await textarea.input_value()).replace("\r\n", "\n") == text  # nothing lost
    assert (await api(page, live_stack, "/api/jobs/"))["jobs"] == []


async def test_cancel_from_the_page(page: Page, live_stack: LiveStack, target: TargetServer) -> None:
    urls = [target.url(f"/ok/{i}?delay=2000") for i in range(200)]
    job_id = await submit_pasted(page, urls, name="to cancel", concurrency=4)
    await poll(lambda: target.stats().in_flight == 4, timeout=60, what="requests in flight", stack=live_stack)
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))  # "Cancel this job? ..."
    await page.get_by_role("button", name="Cancel job").click()
    await expect(page.locator("#job-status")).to_have_text("Cancelled")
    await expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
    job = await assert_page_matches_api(page, live_stack, job_id)
    assert job["cancelled"] >= 190 and job["done"] == job["total"] == 200
    assert target.stats().requests < 20


async def test_pause_and_resume_from_the_page(page: Page, live_stack: LiveStack, target: TargetServer) -> None:
    # Wave one is slow, so the pause lands while it is in flight; the rest is quick.
    urls = [target.url(f"/ok/{i}?delay={2500 if i < 4 else 20}") for i in range(80)]
    job_id = await submit_pasted(page, urls, name="pause me", concurrency=4)
    await poll(lambda: target.stats().in_flight == 4, timeout=60, what="wave one in flight", stack=live_stack)
    # By keyboard: the controls are real buttons.
    await page.get_by_role("button", name="Pause").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#job-status")).to_have_text("Paused")
    await expect(page.get_by_role("button", name="Resume")).to_be_visible()
    await expect(page.locator("#stat-eta")).to_have_text("Paused")
    # The requests in flight finished and were recorded; no new one started.
    assert (target.stats().requests, target.stats().in_flight) == (4, 0)
    job = await assert_page_matches_api(page, live_stack, job_id)
    assert (job["status"], job["succeeded"]) == ("paused", 4)
    await asyncio.sleep(1.0)
    assert target.stats().requests == 4  # nothing starts while paused

    await page.get_by_role("button", name="Resume").click()
    await expect(page.locator("#job-status")).to_have_text("Completed")
    job = await assert_page_matches_api(page, live_stack, job_id)
    assert job["succeeded"] == 80
    assert target.stats().requests == 80  # every URL exactly once


async def test_page_reconnects_after_daphne_restarts_and_ends_correct(
    page: Page, live_stack: LiveStack, target: TargetServer
) -> None:
    urls = [target.url(f"/ok/{i}?delay=100") for i in range(400)]
    job_id = await submit_pasted(page, urls, name="survives restarts", concurrency=4)
    await expect(page.locator("#connection")).to_have_text("Live")
    await page.evaluate(
        """() => {
            window.__sameDocument = true;
            window.__states = [];
            const el = document.getElementById("connection");
            new MutationObserver(() => window.__states.push(el.dataset.state))
                .observe(el, {attributes: true, attributeFilter: ["data-state"]});
        }"""
    )
    await poll(lambda: _at_least(page, "#stat-succeeded", 20), timeout=60, what="progress", stack=live_stack)
    await asyncio.to_thread(live_stack.restart_daphne, down_for=1.0)
    await expect(page.locator("#job-status")).to_have_text("Completed")
    states = await page.evaluate("window.__states")
    assert "waiting" in states, states  # the page saw the connection drop ...
    assert "open" in states[states.index("waiting"):], states  # ... and reconnected by itself
    assert await page.evaluate("window.__sameDocument") is True
    job = await assert_page_matches_api(page, live_stack, job_id)
    assert job["succeeded"] == 400


async def _at_least(page: Page, selector: str, value: int) -> bool:
    return await number(page, selector) >= value


async def test_a_20000_url_job_keeps_the_page_responsive_with_a_bounded_dom(
    page: Page, live_stack: LiveStack, target: TargetServer
) -> None:
    total = 20_000
    urls = [target.url(f"/ok/{i}") for i in range(total)]
    job = await api_post(page, live_stack, "/api/jobs/", {"urls": urls, "name": "big", "concurrency": 50})
    await page.goto(live_stack.url(f"/jobs/{job['id']}/"))
    # How late a 50 ms timer fires: a busy main thread shows as long gaps.
    await page.evaluate(
        """() => {
            window.__maxGap = 0;
            let last = performance.now();
            setInterval(() => {
                const now = performance.now();
                window.__maxGap = Math.max(window.__maxGap, now - last - 50);
                last = now;
            }, 50);
        }"""
    )
    rows_seen = []
    deadline = time.monotonic() + 240
    scrolled = False
    while await page.locator("#job-status").inner_text() != "Completed":
        live_stack.assert_alive()
        assert time.monotonic() < deadline, "the 20k job did not complete in time"
        rows_seen.append(await dom_rows(page))
        if not scrolled and await number(page, "#stat-succeeded") > 3000:
            # Scroll far down mid-job: older rows are read from the API, the DOM stays a window.
            await page.locator("#results-scroll").evaluate("el => { el.scrollTop = el.scrollHeight; }")
            scrolled = True
        await asyncio.sleep(0.25)
    rows_seen.append(await dom_rows(page))
    assert 0 < max(rows_seen) <= MAX_DOM_ROWS, rows_seen
    final = await assert_page_matches_api(page, live_stack, job["id"])
    assert final["succeeded"] == total
    await expect(page.locator("#results-count")).to_have_text("20,000 rows")

    # The bottom of the list holds the oldest rows, read on demand; still only a window in the DOM.
    scroller = page.locator("#results-scroll")
    for _ in range(40):
        await scroller.evaluate("el => { el.scrollTop = el.scrollHeight; }")
        await asyncio.sleep(0.1)
    assert await scroller.evaluate("el => el.scrollHeight") >= 32 * 5000  # thousands of rows scroll ...
    assert await dom_rows(page) <= MAX_DOM_ROWS  # ... but only a window of them is in the DOM
    max_gap = await page.evaluate("window.__maxGap")
    assert max_gap < 2000, f"the page's main thread stalled for {max_gap:.0f} ms"


async def test_late_updates_from_another_worker_never_undo_what_the_page_shows(page: Page) -> None:
    """Workers sharing a job publish independently, so an older update can arrive after a newer one."""
    stale = "([shown, next]) => window.Batchfetch.isStale(shown, next)"
    running = {"status": "running", "succeeded": 40, "failed": 2, "cancelled": 0}
    cases = [
        (running, {**running, "succeeded": 39}, True),  # counters went back: older
        (running, {**running, "succeeded": 41}, False),
        ({**running, "status": "completed"}, running, True),  # a finished job stays finished
        (running, {**running, "status": "cancelling"}, False),
        ({**running, "status": "paused"}, {**running, "status": "queued"}, False),  # resumed
    ]
    for shown, update, expected in cases:
        assert await page.evaluate(stale, [shown, update]) is expected, (shown, update)


async def test_the_live_page_shows_each_hosts_requests_in_flight_and_its_adaptive_limit(
    page: Page, live_stack: LiveStack, target: TargetServer
) -> None:
    urls = [target.url(f"/ok/{i}?delay=400") for i in range(120)]
    body = {"urls": urls, "name": "polite", "concurrency": 20, "per_host": 3, "autothrottle": True}
    job = await api_post(page, live_stack, "/api/jobs/", body)
    await page.goto(live_stack.url(f"/jobs/{job['id']}/"))
    host = target.base_url.removeprefix("http://")
    row = page.locator(f'#hosts-body tr[data-host="{host}"]')
    await expect(row).to_be_visible()  # hosts.js renders the stats' hosts (no inline script: the CSP holds)
    await expect(page.get_by_role("heading", name="Hosts")).to_be_visible()
    # The adaptive limit grows from 1 towards per_host as fast answers come back; in flight never passes it.
    await expect(row.locator("td").nth(2)).to_have_text("3", timeout=60_000)
    shown_in_flight = int(await row.locator("td").nth(1).inner_text())
    assert 0 <= shown_in_flight <= 3
    stats = await api(page, live_stack, f"/api/jobs/{job['id']}/stats/")
    assert [h["host"] for h in stats["hosts"]] == [host] and stats["hosts"][0]["limit"] == 3
    await expect(page.locator("#job-status")).to_have_text("Completed")
    assert target.stats().peak_in_flight <= 3
