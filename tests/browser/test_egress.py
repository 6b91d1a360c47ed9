"""A job's egress on its page: each decision of the proxy (the job's `egress` events, live
while it runs) and what its record keeps (its allow-list, the counts, the bytes, each
refused host with why). The runner is the simulated one: the decisions are written by
tower's own statements for the proxy's answers (tower/egress/queries.py), as the proxy's
questions would write them (tests/e2e/test_egress.py runs the real proxy)."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Page, expect

from tests.browser.conftest import read_job, screenshot, submit_job
from tests.support.live import client_for
from tower.db.pool import create_pool
from tower.egress import queries

PROFILE = """\
name = "egress-browser"
engine = "claude-code"

[egress]
allow = ["pypi.org", "files.example.com:8443"]
"""
REASON = "evil.example.com:443 is not on this job's allow-list"


async def test_a_jobs_egress_decisions_show_as_they_are_made_and_its_record_after(
    page: Page, tower_url: str, database_url: str
) -> None:
    async with client_for(tower_url) as client:
        answer = await client.put("/configs/profile/egress-browser", json={"content": PROFILE})
    assert answer.status_code in (200, 201), answer.text
    job_id = await submit_job(tower_url, prompt="sleep 8\nprint fetched", profile="egress-browser")
    await page.goto(f"{tower_url}/ui/#/jobs/{job_id}")
    await expect(page.locator(".job-status .badge")).to_have_text("running")
    card = page.locator(".card.egress")
    # The record's part shows at once, before any request: the list the job runs with.
    await expect(card.locator(".egress-allow li")).to_have_text(
        ["pypi.org", "files.example.com:8443"]
    )

    await _decide(database_url, job_id)
    rows = card.locator(".egress-table tbody tr")
    await expect(rows).to_have_count(2)
    allowed, refused = rows.nth(0), rows.nth(1)
    await expect(allowed.locator("td")).to_have_text(
        ["pypi.org", "443", "CONNECT", "allowed", "4.9 KiB", "HTTP 200"]
    )
    await expect(refused.locator("td")).to_have_text(
        ["evil.example.com", "443", "CONNECT", "refused", "0 B", REASON]
    )
    await expect(page.locator(".job-status .badge")).to_have_text("running")  # live, then

    # At its end the page reads the record again: its counts and refused hosts.
    await expect(page.locator(".job-status .badge")).to_have_text("completed")
    facts = card.locator(".egress-facts")
    await expect(facts.locator("dd").nth(1)).to_have_text("1")  # allowed
    await expect(facts.locator("dd").nth(2)).to_have_text("1")  # refused
    await expect(facts.locator("dd").nth(3)).to_have_text("4.9 KiB")
    refused_hosts = card.locator(".egress-refused-table tbody tr td")
    await expect(refused_hosts).to_have_text(["evil.example.com", "443", REASON])
    record = await read_job(tower_url, job_id)
    assert record["egress"]["allowed"] == 1 and record["egress"]["bytes"] == 5000
    await screenshot(page, "job-egress")


async def test_a_job_without_an_allow_list_shows_no_egress(page: Page, tower_url: str) -> None:
    job_id = await submit_job(tower_url, prompt="print hi")
    await page.goto(f"{tower_url}/ui/#/jobs/{job_id}")
    await expect(page.locator(".job-status .badge")).to_have_text("completed")
    await expect(page.locator(".result")).to_contain_text("hi")
    await expect(page.locator(".card.egress")).to_be_hidden()


async def _decide(database_url: str, job_id: str) -> None:
    """What the proxy's two questions would leave: pypi.org allowed, then ended having
    moved 5000 bytes; evil.example.com refused."""
    allowed: dict[str, Any] = {"host": "pypi.org", "port": 443, "method": "CONNECT",
                               "allowed": True, "bytes": 5000, "status": 200}  # fmt: skip
    refused: dict[str, Any] = {"host": "evil.example.com", "port": 443, "method": "CONNECT",
                               "allowed": False, "bytes": 0, "reason": REASON}  # fmt: skip
    listed = {"host": "evil.example.com", "port": 443, "reason": REASON}
    pool = await create_pool(database_url, 1)
    try:
        async with pool.acquire() as connection:
            serial = await queries.open_request(connection, job_id, "proxy", 16, 1 << 30)
            assert serial == 1
            assert await queries.ended(connection, job_id, 1, 1, 5000, allowed) == "egress-browser"
            await queries.refuse(connection, job_id, 1, listed, None, refused)
    finally:
        await pool.close()
