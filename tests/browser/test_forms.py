"""The server's validation messages, shown next to the field they name."""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.browser.conftest import screenshot
from tests.support.live import client_for

BROKEN_TOML = 'name = "researcher"\ndescription = "unterminated\n[vars.depth\n'


async def test_a_bad_variable_is_refused_next_to_its_field(page: Page, tower_url: str) -> None:
    await page.goto(f"{tower_url}/ui/#/submit")
    await page.get_by_label("Profile").select_option("code-review")
    max_findings = page.get_by_label("max_findings")
    await max_findings.fill("lots")
    await page.get_by_label("include_praise").select_option("true")
    await page.get_by_role("button", name="Submit job").click()

    error = page.locator('[data-field="prompt_vars.max_findings"] .field-error')
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("must be an integer")
    await expect(max_findings).to_have_attribute("aria-invalid", "true")
    await expect(max_findings).to_be_focused()
    await screenshot(page, "submit-bad-variable")

    # A value of the right type goes through with its type: the job is accepted.
    await max_findings.fill("7")
    await page.get_by_role("button", name="Submit job").click()
    await expect(page.locator(".job-status .badge")).to_have_text("completed")
    async with client_for(tower_url) as client:
        jobs = (await client.get("/jobs")).json()
    assert jobs["total"] == 1  # the refused submission created nothing


async def test_a_bad_agent_id_and_budget_are_refused_next_to_their_fields(
    page: Page, tower_url: str
) -> None:
    await page.goto(f"{tower_url}/ui/#/submit")
    await page.get_by_label("Agent id").fill("not valid!")
    await page.get_by_text("Advanced options").click()
    await page.get_by_label("Max budget (USD)").fill("500")
    await page.get_by_role("button", name="Submit job").click()
    await expect(page.locator('[data-field="agent_id"] .field-error')).to_contain_text("pattern")
    await expect(page.locator('[data-field="max_budget_usd"] .field-error')).to_contain_text("50")


async def test_a_profile_with_broken_toml_is_refused_with_the_servers_message(
    page: Page, tower_url: str
) -> None:
    async with client_for(tower_url) as client:
        before = (await client.get("/configs/profile/researcher")).json()["content"]
    await page.goto(f"{tower_url}/ui/#/configs/profile/researcher")
    editor = page.locator("#config-content")
    await expect(editor).to_have_value(before)
    await editor.fill(BROKEN_TOML)
    await page.get_by_role("button", name="Save").click()

    error = page.locator('[data-field="content"] .field-error')
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("TOML")
    await expect(editor).to_have_attribute("aria-invalid", "true")
    await expect(page.locator(".save-state")).to_have_text("Not saved")
    async with client_for(tower_url) as client:
        after = (await client.get("/configs/profile/researcher")).json()["content"]
    assert after == before
    await screenshot(page, "config-broken-toml")

    # Fixed, it saves; the message goes.
    await editor.fill(before.replace("Investigates", "Looks into"))
    await page.keyboard.press("Control+s")
    await expect(page.locator(".save-state")).to_contain_text("Saved")
    await expect(error).to_be_hidden()
