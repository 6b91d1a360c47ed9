"""What a job prints is shown as text: an agent's output never becomes markup on the page."""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.browser.conftest import screenshot, submit_job

HOSTILE = [
    "# Report",
    "Found **2** issues in `main.py`:",
    '- <img src=x onerror="window.__owned = true">',
    "- [click me](javascript:window.__owned=true) and [docs](https://example.invalid/x)",
    "<script>window.__owned = true</script>",
]


async def test_a_hostile_result_renders_as_inert_text(page: Page, tower_url: str) -> None:
    prompt = "\n".join(f"print {line}" for line in HOSTILE)
    job_id = await submit_job(tower_url, prompt=prompt, agent_id="hostile")
    await page.goto(f"{tower_url}/ui/#/jobs/{job_id}")
    result = page.locator(".result .markdown")
    await expect(result.locator("h1")).to_have_text("Report")
    await expect(result.locator("strong")).to_have_text("2")
    await expect(result.locator("code")).to_have_text("main.py")
    await expect(result.locator("li")).to_have_count(2)
    await expect(result).to_contain_text('<img src=x onerror="window.__owned = true">')
    await expect(result).to_contain_text("<script>window.__owned = true</script>")
    assert await result.locator("img, script").count() == 0
    links = result.locator("a")
    await expect(links).to_have_count(1)  # the javascript: link stays text
    await expect(links).to_have_attribute("href", "https://example.invalid/x")
    await expect(links).to_have_attribute("rel", "noopener noreferrer nofollow")
    await expect(page.locator("#job-log")).to_contain_text("<script>")
    assert await page.locator("#job-log script, #job-log img").count() == 0
    assert await page.evaluate("window.__owned === undefined")

    await page.get_by_role("tab", name="Raw JSON").click()
    await expect(page.locator(".result pre.json")).to_contain_text(f'"job_id": "{job_id}"')
    await page.get_by_role("tab", name="Raw JSON").press("ArrowLeft")
    await expect(page.get_by_role("tab", name="Result")).to_be_focused()
    await expect(result).to_be_visible()
    await screenshot(page, "job-result-markdown")


async def test_operations_view(page: Page, tower_url: str) -> None:
    for prompt in ("print ok", "exit 2", "sleep 3600"):
        await submit_job(tower_url, prompt=prompt, agent_id="ops")
    await page.goto(f"{tower_url}/ui/#/ops")
    await expect(page.locator(".check", has_text="db")).to_contain_text("ok")
    queue = page.locator(".card", has=page.get_by_role("heading", name="Queue"))
    await expect(queue.locator(".stat", has_text="Running")).to_contain_text("1")
    await expect(page.locator("figure.chart")).to_have_count(3)
    # One bar each, or two if the jobs straddled a minute.
    await expect(page.locator("figure.chart rect.s-completed").first).to_be_visible()
    await expect(page.locator("figure.chart rect.s-failed").first).to_be_visible()
    await screenshot(page, "operations")
