"""With TOWER_API_KEY set: a 401 says so plainly; signing in with the key works."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, Request, expect

from tests.browser.conftest import screenshot, submit_job

KEY = "browser-test-key-4f1c"


@pytest.fixture
def api_key() -> str:
    return KEY


async def test_signing_in_with_the_key(page: Page, tower_url: str) -> None:
    job_id = await submit_job(tower_url, KEY, prompt="print secret work", agent_id="keyed")
    urls: list[str] = []

    def remember(request: Request) -> None:
        urls.append(request.url)

    page.on("request", remember)
    await page.goto(f"{tower_url}/ui/")
    banner = page.locator("#banner")
    await expect(banner).to_contain_text("requires an API key")
    await expect(page.locator("#live")).to_have_text("Not signed in")
    await expect(page.get_by_label("API key")).to_be_focused()
    await screenshot(page, "auth-required")

    await page.get_by_label("API key").fill("wrong-key")
    await page.keyboard.press("Enter")
    await expect(banner).to_contain_text("requires an API key")

    await page.get_by_label("API key").fill(KEY)
    await page.get_by_role("button", name="Sign in").click()
    await expect(banner).to_be_hidden()
    await expect(page.locator(f'tr[data-job-id="{job_id}"] .badge')).to_have_text("completed")
    await expect(page.locator("#live")).to_have_text("Live")
    await expect(page.locator("#auth-state")).to_have_text("Signed in")
    assert await page.evaluate("sessionStorage.getItem('parpaing.apiKey')") == KEY
    assert not [url for url in urls if KEY in url], "the key must never be put in a URL"
    await screenshot(page, "auth-signed-in")

    # The key lives for the tab's session: a reload keeps it; signing out forgets it.
    await page.reload()
    await expect(page.locator(f'tr[data-job-id="{job_id}"]')).to_be_visible()
    await page.get_by_role("button", name="Sign out").click()
    await expect(banner).to_contain_text("requires an API key")
    assert await page.evaluate("sessionStorage.getItem('parpaing.apiKey')") is None
