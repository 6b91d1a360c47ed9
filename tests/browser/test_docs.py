"""/docs in a real browser: Swagger UI starts under a strict Content-Security-Policy, works
with the key, and keeps the key out of localStorage."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import screenshot, submit_job

KEY = "docs-browser-key-7e2a"
# Collects every CSP violation the page reports, from before its first script runs.
WATCH_VIOLATIONS = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', (event) => {
  window.__violations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


@pytest.fixture
def api_key() -> str:
    return KEY


async def test_docs_run_under_a_strict_policy_and_forget_the_key(
    page: Page, tower_url: str
) -> None:
    job_id = await submit_job(tower_url, KEY, prompt="print documented", agent_id="docs")
    await page.add_init_script(WATCH_VIOLATIONS)
    response = await page.goto(f"{tower_url}/docs")
    assert response is not None
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in policy, policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, policy
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("Parpaing")

    await _authorize(page, KEY)
    found = await _try_out(page, "get", "/jobs/{job_id}", job_id=job_id)
    answer = found.locator(".live-responses-table .response")
    await expect(answer.locator(".response-col_status")).to_have_text("200")
    await expect(answer.locator(".response-col_description")).to_contain_text(job_id)
    await screenshot(page, "docs-authorized")

    assert await page.evaluate("window.__violations") == []
    assert await page.evaluate("Object.keys(localStorage)") == []
    assert await _stored_anywhere(page, KEY) is False


async def _authorize(page: Page, key: str) -> None:
    await page.locator(".auth-wrapper .btn.authorize").click()
    dialog = page.locator(".dialog-ux .modal-ux")
    await dialog.locator("input").fill(key)
    await dialog.locator(".auth-btn-wrapper .btn.authorize").click()
    await expect(dialog.locator(".auth-btn-wrapper .btn")).to_have_text(["Logout", "Close"])
    await dialog.locator(".btn-done").click()


async def _try_out(page: Page, method: str, path: str, **params: str) -> Any:
    operation = page.locator(f".opblock-{method}").filter(
        has=page.locator(f'.opblock-summary-path[data-path="{path}"]')
    )
    await operation.locator(".opblock-summary").click()
    await operation.locator(".try-out__btn").click()
    for name, value in params.items():
        await operation.locator(f'tr[data-param-name="{name}"] input').fill(value)
    await operation.locator(".execute").click()
    return operation


async def _stored_anywhere(page: Page, needle: str) -> bool:
    return bool(
        await page.evaluate(
            """(needle) => [localStorage, sessionStorage].some((store) =>
                 Object.keys(store).some((k) => (store.getItem(k) || '').includes(needle)))
               || document.cookie.includes(needle)""",
            needle,
        )
    )
