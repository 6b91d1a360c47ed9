"""Jobs watched live in the page: submitted from the form, listed, logged, cancelled.

Nothing in these tests reloads the page: a marker set on `window` before acting must
still be there at the end, so every change seen came through the event streams."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

from tests.browser.conftest import read_job, screenshot, submit_job
from tests.support.receiver import Receiver

MARKER = "window.__notReloaded = true"
STILL_THE_SAME_PAGE = "window.__notReloaded === true"


async def open_page(page: Page, tower_url: str, route: str) -> None:
    await page.goto(f"{tower_url}/ui/#{route}")
    await page.evaluate(MARKER)


async def test_a_dry_run_submitted_from_the_form_reaches_completed(
    page: Page, tower_url: str
) -> None:
    await open_page(page, tower_url, "/submit")
    await page.get_by_label("Agent id").fill("form-user")
    await page.get_by_label("Prompt", exact=True).fill("print dry run report\nprint **all good**")
    await page.get_by_label("Dry run").check()
    await page.get_by_role("button", name="Submit job").click()

    await expect(page).to_have_url(re.compile(r"#/jobs/form-user-[0-9a-f]{12}$"))
    await expect(page.locator(".job-status .badge")).to_have_text("completed")
    await expect(page.locator(".result .markdown strong")).to_have_text("all good")
    assert await page.evaluate(STILL_THE_SAME_PAGE)
    job_id = page.url.rsplit("/", 1)[-1]
    job = await read_job(tower_url, job_id)
    assert job["status"] == "completed"
    assert job["dry_run"] is True
    await screenshot(page, "submit-dry-run-completed")


async def test_the_list_shows_new_jobs_and_their_changes_as_they_happen(
    page: Page, tower_url: str
) -> None:
    await open_page(page, tower_url, "/jobs")
    await expect(page.locator(".empty")).to_contain_text("No jobs yet")
    await expect(page.locator("#live")).to_have_text("Live")

    waiting = await submit_job(tower_url, prompt="sleep 3600", agent_id="sleeper")
    row = page.locator(f'tr[data-job-id="{waiting}"]')
    await expect(row.locator(".badge")).to_have_text("running")
    done = await submit_job(tower_url, prompt="print hi", agent_id="quick")
    await expect(page.locator(f'tr[data-job-id="{done}"] .badge')).to_have_text("completed")
    await expect(page.locator('.filter[data-status="all"] .count')).to_have_text("2")
    await expect(page.locator('.filter[data-status="running"] .count')).to_have_text("1")
    await expect(page.locator('.filter[data-status="completed"] .count')).to_have_text("1")

    # The status filter and the agent search narrow the list, and it stays live.
    await page.locator('.filter[data-status="running"]').click()
    await expect(page.locator("tbody tr")).to_have_count(1)
    await page.get_by_label("Agent id").fill("quick")
    await page.get_by_role("button", name="Search").click()
    await expect(page.locator(".empty")).to_contain_text("No job matches")
    await page.locator('.filter[data-status="all"]').click()
    await expect(page.locator("tbody tr")).to_have_count(1)
    await expect(page.locator('.filter[data-status="all"] .count')).to_have_text("1")
    assert await page.evaluate(STILL_THE_SAME_PAGE)
    await page.locator('.filter[data-status="all"]').focus()
    await screenshot(page, "job-list-live")


async def test_a_running_jobs_log_lines_arrive_while_watching(page: Page, tower_url: str) -> None:
    # Each line's arrival time in the page, so the test can tell streamed from replayed.
    await page.add_init_script(
        """
        window.__logArrivals = [];
        new MutationObserver(() => {
          const log = document.getElementById('job-log');
          if (log) window.__logArrivals.push([log.textContent, performance.now()]);
        }).observe(document, {childList: true, subtree: true, characterData: true});
        """
    )
    prompt = "\n".join(
        [
            "print line one",
            "sleep 2",
            "warn a warning",
            "print line two",
            "sleep 2",
            "print line three",
            "sleep 3600",
        ]
    )
    job_id = await submit_job(tower_url, prompt=prompt, agent_id="talker")
    await open_page(page, tower_url, f"/jobs/{job_id}")
    log = page.locator("#job-log")
    await expect(log).to_contain_text("line one")
    await expect(page.locator(".job-status .badge")).to_have_text("running")
    await expect(log).to_contain_text("line three")
    await expect(log.locator(".stderr")).to_have_text("a warning\n")
    assert (await log.text_content() or "").index("line one") < (
        await log.text_content() or ""
    ).index("line two")

    arrivals = await page.evaluate("window.__logArrivals")
    first = next(t for text, t in arrivals if "line one" in text)
    last = next(t for text, t in arrivals if "line three" in text)
    assert last - first > 1000, "lines came all at once: not streamed"
    assert await page.evaluate(STILL_THE_SAME_PAGE)
    await screenshot(page, "job-log-streaming")


async def test_cancelling_a_running_job(page: Page, tower_url: str) -> None:
    job_id = await submit_job(tower_url, prompt="print started\nsleep 3600", agent_id="victim")
    await open_page(page, tower_url, f"/jobs/{job_id}")
    await expect(page.locator(".job-status .badge")).to_have_text("running")
    await expect(page.locator("#job-log")).to_contain_text("started")

    cancel = page.get_by_role("button", name="Cancel job")
    await cancel.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator(".job-status .badge")).to_have_text("cancelled")
    await expect(cancel).to_be_hidden()
    await expect(page.locator(".facts")).to_contain_text("Finished")
    assert (await read_job(tower_url, job_id))["status"] == "cancelled"
    assert await page.evaluate(STILL_THE_SAME_PAGE)
    await screenshot(page, "job-cancelled")


async def test_webhook_deliveries_are_shown_with_each_attempt(
    page: Page, tower_url: str, webhook_receiver: Receiver
) -> None:
    await open_page(page, tower_url, "/submit")
    await page.get_by_label("Agent id").fill("hooked")
    await page.get_by_label("Prompt", exact=True).fill("print done")
    await page.get_by_text("Advanced options").click()
    await page.get_by_label("Webhook URL").fill(webhook_receiver.url)
    await page.get_by_role("button", name="Submit job").click()

    await expect(page.locator(".job-status .badge")).to_have_text("completed")
    deliveries = page.locator("table.deliveries")
    # The receiver fails the first attempt; the retry is delivered.
    await expect(deliveries.locator("tbody tr")).to_have_count(2)
    await expect(deliveries.locator("tbody tr").first.locator(".badge")).to_have_text("delivered")
    await expect(deliveries).to_contain_text("HTTP 500")
    await expect(deliveries).to_contain_text("HTTP 200")
    assert len(await webhook_receiver.wait_for(2)) == 2
    assert await page.evaluate(STILL_THE_SAME_PAGE)
    await screenshot(page, "job-webhook-deliveries")
