"""The usage view: each tenant's jobs, tokens and cost, and its quotas as meters; a
tenant's key sees its own tenant only."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import screenshot
from tests.support.live import client_for

KEY = "browser-usage-key"


@pytest.fixture
def api_key() -> str:
    return KEY


async def sign_in(page: Page, tower_url: str, key: str) -> None:
    await page.goto(f"{tower_url}/ui/#/usage")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()


async def finished(client: Any, prompt: str) -> None:
    body = {"agent_id": "usage", "engine": "claude-code", "prompt": prompt}
    job_id = (await client.post("/jobs", json=body)).json()["job_id"]
    record = (await client.get(f"/jobs/{job_id}/wait", params={"timeout": 30})).json()
    assert record["status"] == "completed"


async def test_usage_by_tenant_with_quota_meters(page: Page, tower_url: str) -> None:
    async with client_for(tower_url, KEY) as admin:
        quotas = {"max_running": 4, "spend_per_day_usd": 2.0, "share": 2}
        assert (await admin.put("/tenants/acme", json=quotas)).status_code == 200
        made = await admin.post("/keys", json={"tenant": "acme", "role": "read", "name": "viewer"})
        submitter = await admin.post(
            "/keys", json={"tenant": "acme", "role": "submit", "name": "bot"}
        )
        async with client_for(tower_url, submitter.json()["key"]) as acme:
            await finished(acme, "usage 1200 340 0.5")
            await finished(acme, "usage 800 60 0.25")
        await finished(admin, "print default's")

    await sign_in(page, tower_url, KEY)
    row = page.locator('.usage-table tr[data-tenant="acme"]')
    await expect(row.locator("td").nth(0)).to_have_text("2")  # jobs today
    await expect(row.locator("td").nth(2)).to_have_text("2,000")  # input tokens
    await expect(row.locator("td").nth(4)).to_have_text("$0.75")
    await expect(row.locator("td").nth(5)).to_have_text("2")  # share
    await expect(page.locator('.usage-table tr[data-tenant="default"]')).to_be_visible()
    card = page.locator('.quota-card[data-tenant="acme"]')
    spent = card.locator('.quota[data-quota="spend_per_day_usd"]')
    await expect(spent.locator(".quota-figure")).to_have_text("$0.75 of $2.00")
    assert await spent.locator("meter").get_attribute("max") == "2"
    queued = card.locator('.quota[data-quota="max_queued"]')
    await expect(queued.locator(".quota-free")).to_have_text("no limit")
    await screenshot(page, "usage-admin")

    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, tower_url, made.json()["key"])
    await expect(page.locator(".usage-table tbody tr")).to_have_count(1)
    await expect(page.locator('.usage-table tr[data-tenant="acme"]')).to_be_visible()
    await screenshot(page, "usage-tenant")
