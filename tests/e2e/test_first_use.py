"""What a new user meets first, in a real browser (issue 19): one test per point, each with screenshots.

Same harness as test_browser.py (Chromium through Playwright, daphne + a
`runworker` + Redis, URLs on the loopback target server). The screenshots go to
test-output/first-use-*.png.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from typing import Any

import pytest
from playwright.async_api import Page, expect

from scripts.localservices import free_port
from tests.e2e.helpers import OUTPUT_DIR, api, job_id_of, number, poll, submit_pasted
from tests.services import LiveStack
from tests.target import TargetServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


async def screenshot(page: Page, name: str) -> None:
    OUTPUT_DIR.mkdir(exist_ok=True)
    await page.screenshot(path=str(OUTPUT_DIR / f"first-use-{name}.png"), full_page=True)


# --- 2. skip invalid lines ------------------------------------------------------------------------


async def test_bad_lines_are_highlighted_and_can_be_skipped(
    page: Page, live_stack: LiveStack, target: TargetServer
) -> None:
    good = [target.url(f"/ok/{i}") for i in range(3)]
    text = "\n".join([good[0], "ftp://files.example/a", good[1], "", "not a url", good[2]])
    textarea = page.get_by_label("URLs", exact=True)
    await textarea.fill(text)
    await page.get_by_role("button", name="Start job").click()
    await expect(page.locator("#form-errors")).to_contain_text("line 2: scheme must be http or https, not 'ftp'")
    # The refused lines (2 and 5) are marked in the textarea's backdrop, the others are not.
    marked = page.locator(".highlight__line--bad")
    await expect(marked).to_have_count(2)
    assert [t.strip() for t in await marked.all_inner_texts()] == ["ftp://files.example/a", "not a url"]
    box_area, box_mark = await textarea.bounding_box(), await marked.first.bounding_box()
    assert box_area and box_mark and box_area["y"] < box_mark["y"] < box_area["y"] + box_area["height"]
    await screenshot(page, "bad-lines")
    # Fixing a line in place removes its mark.
    await textarea.fill(text.replace("not a url", good[2]))
    await expect(marked).to_have_count(1)
    await textarea.fill(text)

    await page.get_by_label("Skip invalid lines").check()
    await page.get_by_role("button", name="Start job").click()
    await expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f-]{36}/$"))
    job_id = job_id_of(page)
    await expect(page.locator("#job-status")).to_have_text("Completed")
    skipped = page.locator("#skipped-lines li")
    await expect(skipped).to_have_count(2)
    await expect(skipped.nth(0)).to_contain_text("line 2: scheme must be http or https, not 'ftp'")
    await expect(skipped.nth(1)).to_contain_text("line 5: ")
    await expect(page.locator("#skipped-heading")).to_have_text("2 lines skipped")
    job = await api(page, live_stack, f"/api/jobs/{job_id}/")
    assert (job["total"], job["succeeded"], job["skipped_urls"]) == (3, 3, 2)
    await screenshot(page, "skipped")


# --- 3. numbers that agree ----------------------------------------------------------------------


async def _page_figures(page: Page) -> dict[str, Any]:
    codes = {}
    for item in await page.locator("#breakdown li").all_inner_texts():
        label, _, count = item.rpartition("\n")
        codes[label.strip()] = int(count.replace(",", ""))
    desc = await page.locator("#throughput-desc").inner_text()
    match = re.match(r"([\d,]+) URLs fetched", desc)
    return {
        "succeeded": await number(page, "#stat-succeeded"),
        "failed": await number(page, "#stat-failed"),
        "pending": await number(page, "#stat-pending"),
        "percent": (await page.locator("#job-percent").inner_text()).strip(),
        "codes": codes,
        "chart": int(match.group(1).replace(",", "")) if match else 0,
    }


def _api_figures(job: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    fetched = job["succeeded"] + job["failed"]
    return {
        "succeeded": job["succeeded"],
        "failed": job["failed"],
        "pending": job["total"] - job["done"],
        "percent": f"{fetched * 100 // job['total']}%",
        "codes": {f"HTTP {item['code']}": item["count"] for item in stats["status_codes"]},
        "chart": sum(point["n"] for point in stats["throughput"]),
    }


async def test_the_page_equals_the_api_mid_run_and_a_cancelled_bar_shows_what_was_fetched(
    page: Page, live_stack: LiveStack, target: TargetServer
) -> None:
    # Waves of 5 slow requests: between two waves nothing changes for ~1.5 s, a moment to compare in.
    urls = [target.url("/status/404?delay=1500") if i % 4 == 3 else target.url(f"/ok/{i}?delay=1500")
            for i in range(60)]
    job_id = await submit_pasted(page, urls, name="numbers", concurrency=5)
    compared = 0
    deadline = time.monotonic() + 90
    while compared < 2:
        assert time.monotonic() < deadline, "never found a quiet moment mid-run"
        live_stack.assert_alive()
        job = await api(page, live_stack, f"/api/jobs/{job_id}/")
        stats = await api(page, live_stack, f"/api/jobs/{job_id}/stats/")
        fetched = job["succeeded"] + job["failed"]
        if job["status"] != "running" or not 0 < fetched < 40 or stats["job"]["done"] != job["done"]:
            await asyncio.sleep(0.2)
            continue
        expected = _api_figures(job, stats)
        # The page may take a moment to hear of the same state, but must then show exactly it.
        settle = time.monotonic() + 1.0
        while (shown := await _page_figures(page)) != expected and time.monotonic() < settle:
            await asyncio.sleep(0.05)
        again = await api(page, live_stack, f"/api/jobs/{job_id}/")
        if again["done"] != job["done"]:
            continue  # the next wave landed meanwhile: not the same moment
        assert shown == expected
        if compared == 0:
            await screenshot(page, "numbers-mid-run")
        compared += 1
        await asyncio.sleep(1.0)

    # The row numbers are the API's positions (0-based, one numbering everywhere).
    # (Read in one go: rows streamed meanwhile re-render the window.)
    rows = await page.locator("#results-body tr[data-position]").evaluate_all(
        "rows => rows.map(row => [row.dataset.position, row.cells[0].textContent.trim()])"
    )
    assert rows and all(shown == f"{int(position):,}" for position, shown in rows), rows
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name="Cancel job").click()
    await expect(page.locator("#job-status")).to_have_text("Cancelled")
    job = await api(page, live_stack, f"/api/jobs/{job_id}/")
    fetched = job["succeeded"] + job["failed"]
    assert 0 < fetched < job["total"] and job["cancelled"] == job["total"] - fetched
    # The bar shows what was fetched, not 100%, and the summary says what was cancelled.
    await expect(page.locator("#job-percent")).to_have_text(f"{fetched * 100 // job['total']}%")
    assert await page.locator("#job-progress").evaluate("el => el.value") == fetched
    await expect(page.locator("#job-summary")).to_have_text(
        f"{fetched} of {job['total']} URLs fetched ({fetched * 100 // job['total']}%), {job['cancelled']} cancelled"
        " · Cancelled"
    )
    await expect(page.locator("#job-progress-cancelled")).to_be_visible()
    await screenshot(page, "cancelled")


# --- 4. readable errors -------------------------------------------------------------------------


async def test_errors_are_short_once_and_a_row_opens_its_detail(
    page: Page, live_stack: LiveStack, target: TargetServer
) -> None:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    urls = [f"http://{closed}/nothing", target.url("/redirect/2"), target.url("/status/404"), target.url("/cookies")]
    await page.get_by_label("URLs", exact=True).fill("\n".join(urls))
    await page.get_by_label("Name").fill("errors")
    await page.locator("summary", has_text="Fetch options").click()
    await page.get_by_label("Retries").fill("2")
    await page.get_by_role("button", name="Start job").click()
    await expect(page.locator("#job-status")).to_have_text("Completed")
    job_id = job_id_of(page)
    refused = f"connect: connection refused by {closed} (the same on all 3 attempts)"
    row = page.locator("#results-body tr[data-position='0']")
    await expect(row.locator(".results__error")).to_have_text(refused)

    await row.click()
    dialog = page.locator("#result-detail")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text(f"http://{closed}/nothing")
    await expect(dialog).to_contain_text(f"connection refused by {closed}")
    await expect(dialog).to_contain_text("the same on all 3 attempts")
    await expect(dialog).to_contain_text("batchfetch/1.0")
    await screenshot(page, "detail-error")
    detail = await api(page, live_stack, f"/api/jobs/{job_id}/results/0/")
    assert (detail["error_class"], detail["attempts"], detail["error"]) == ("connect", 3, refused)
    assert detail["error_summary"] == f"connect: connection refused by {closed}"
    assert detail["attempt_history"] == ["the same on all 3 attempts"]
    await page.get_by_role("button", name="Close").click()
    await expect(dialog).to_be_hidden()

    # A redirected row: the final URL and the hops, by keyboard.
    redirected = page.locator("#results-body tr[data-position='1']")
    await redirected.focus()
    await page.keyboard.press("Enter")
    await expect(dialog).to_contain_text(target.url("/ok"))
    detail = await api(page, live_stack, f"/api/jobs/{job_id}/results/1/")
    assert (detail["redirects"], detail["status_code"], detail["final_url"]) == (2, 200,
                                                                                target.url("/ok"))
    assert ["Content-Type", "application/octet-stream"] in detail["response_headers"]
    await expect(dialog.locator("section", has_text="Response")).to_contain_text("application/octet-stream")
    await screenshot(page, "detail-redirect")
    await page.get_by_role("button", name="Close").click()

    # The response headers as the worker kept them: in order, the site's cookies masked.
    await page.locator("#results-body tr[data-position='3']").click()
    response = dialog.locator("section", has_text="Response")
    await expect(response).to_contain_text("X-Trace")
    await expect(response).to_contain_text("t-1")
    assert (await response.inner_text()).count("•••") == 2
    assert "s3cr3t" not in await dialog.inner_text()
    detail = await api(page, live_stack, f"/api/jobs/{job_id}/results/3/")
    masked = ["Set-Cookie", "•••"]
    assert detail["response_headers"][:3] == [masked, masked, ["X-Trace", "t-1"]]
    await screenshot(page, "detail-headers")


# --- 5. layout polish ---------------------------------------------------------------------------


async def test_layout_polish_options_cancel_favicon_and_admin(
    page: Page, live_stack: LiveStack, target: TargetServer, django_user_model: Any
) -> None:
    await page.locator("summary", has_text="Fetch options").click()
    for label in ("Respect robots.txt", "Save bodies", "Skip invalid lines"):
        box = await page.get_by_label(label).bounding_box()
        text = await page.locator("label", has_text=label).bounding_box()
        assert box and text
        assert 0 <= text["x"] - (box["x"] + box["width"]) <= 16, (label, box, text)  # right beside its label
        assert abs((box["y"] + box["height"] / 2) - (text["y"] + text["height"] / 2)) <= 6, (label, box, text)
    hint = await page.locator("#id_max_bytes_helptext").inner_text()
    assert "e+" not in hint and "1,073,741,824" in hint and "1 GiB" in hint, hint
    await screenshot(page, "options")

    favicon = await page.request.get(live_stack.url("/favicon.ico"))
    assert favicon.ok and "svg" in favicon.headers["content-type"]

    # Cancel asks first; saying no keeps the job running. The button goes once the job has finished.
    job_id = await submit_pasted(page, [target.url(f"/ok/{i}?delay=1000") for i in range(20)], name="polish",
                                 concurrency=2)
    answers: list[str] = []

    async def dismiss(dialog: Any) -> None:
        answers.append(dialog.message)
        await dialog.dismiss()

    page.once("dialog", lambda dialog: asyncio.ensure_future(dismiss(dialog)))
    await page.get_by_role("button", name="Cancel job").click()
    await poll(lambda: answers, timeout=10, what="the confirmation", stack=live_stack)
    assert re.match(r"Cancel this job\? \d+ URLs not fetched yet will be recorded as cancelled", answers[0]), answers
    await asyncio.sleep(0.5)
    assert (await api(page, live_stack, f"/api/jobs/{job_id}/"))["status"] == "running"
    await expect(page.locator("#job-status")).to_have_text("Completed")
    await expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
    await screenshot(page, "finished")

    # The admin: every option and a link to the live page; the list's Created column fits at 1280 px.
    password = secrets.token_urlsafe(16)
    await asyncio.to_thread(django_user_model.objects.create_superuser, username="root", password=password)
    admin = await page.context.new_page()
    await admin.goto(live_stack.url("/admin/login/"))
    await admin.get_by_label("Username").fill("root")
    await admin.get_by_label("Password").fill(password)
    await admin.get_by_role("button", name="Log in").click()
    await admin.goto(live_stack.url(f"/admin/jobs/job/{job_id}/change/"))
    for option in ("Concurrency", "Timeout", "Per host", "Host delay", "Retries", "Max redirects", "Max bytes",
                   "Respect robots", "Save bodies"):
        await expect(admin.locator("fieldset", has_text="Options")).to_contain_text(option)
    live_link = admin.get_by_role("link", name="Open the live page")
    assert await live_link.get_attribute("href") == f"/jobs/{job_id}/"
    await screenshot(admin, "admin-job")
    await admin.goto(live_stack.url("/admin/jobs/job/"))
    created = admin.locator("td.field-created_display").first
    await expect(created).to_be_visible()
    assert await created.evaluate("el => el.scrollWidth <= el.clientWidth")
    # Nothing is cut off: the list fits its box (which would otherwise scroll or clip it).
    box = admin.locator("#changelist .results")
    assert await box.evaluate("el => el.scrollWidth <= el.clientWidth"), await box.evaluate(
        "el => [el.scrollWidth, el.clientWidth]")
    cell, frame = await created.bounding_box(), await box.bounding_box()
    assert cell and frame and cell["x"] + cell["width"] <= frame["x"] + frame["width"] + 0.5
    assert await admin.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await screenshot(admin, "admin-list")
