"""Browser tests: the dashboard in Debian's Chromium, driven by Playwright, against a
real tower (uvicorn on loopback) on a real PostgreSQL, running jobs with the simulated
runner. Each test saves a screenshot under test-output/screenshots/ (CI keeps it)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from tests.support.live import client_for, live_tower
from tests.support.receiver import Receiver, receiver
from tower.execution.simulated import SimulatedRunner
from tower.settings import Settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
# Generous bound for what should happen in well under a second: a liveness check only.
UI_TIMEOUT_MS = 30_000
expect.set_options(timeout=UI_TIMEOUT_MS)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test does)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
def api_key() -> str:
    """No key by default; a test that wants auth on overrides this fixture."""
    return ""


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on loopback that fails the first delivery attempt."""
    async with receiver([500]) as server:
        yield server


@pytest.fixture
async def tower_url(database_url: str, api_key: str) -> AsyncIterator[str]:
    settings = Settings(
        database_url=database_url,
        tower_runner="simulated",
        tower_api_key=api_key,
        # The receiver is on loopback; retries come quickly so a test sees them.
        webhook_allow_private=True,
        webhook_retry_base=0.05,
        webhook_retry_max=0.1,
    )
    async with live_tower(settings, SimulatedRunner()) as url:
        yield url


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


FAILED = pytest.StashKey[bool]()


@pytest.fixture
async def page(
    browser: Browser, tower_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Page]:
    """A fresh browser context per test. A script error on the page fails the test, and
    so does a request to anywhere but the tower (the page must work with no internet)."""
    context = await browser.new_context(viewport={"width": 1320, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    elsewhere: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: _keep_errors(message, errors))
    page.on("request", lambda r: None if r.url.startswith(tower_url) else elsewhere.append(r.url))
    yield page
    if request.node.stash.get(FAILED, False):  # what the page showed when it failed
        await screenshot(page, f"FAILED-{request.node.name}")
    await context.close()
    assert not errors, f"errors on the page: {errors}"
    assert not elsewhere, f"requests to other origins: {elsewhere}"


def _keep_errors(message: ConsoleMessage, errors: list[str]) -> None:
    # A refused request (401, 422...) is logged by Chromium as a console error: expected.
    if message.type == "error" and "Failed to load resource" not in message.text:
        errors.append(message.text)


async def submit_job(tower_url: str, api_key: str = "", **fields: Any) -> str:
    """Submit through the API (not the page) and return the job id."""
    body = {"agent_id": "browser", "engine": "claude-code", **fields}
    async with client_for(tower_url, api_key) as client:
        response = await client.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def read_job(tower_url: str, job_id: str, api_key: str = "") -> dict[str, Any]:
    async with client_for(tower_url, api_key) as client:
        response = await client.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


async def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
