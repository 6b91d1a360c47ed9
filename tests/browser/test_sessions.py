"""A job's session in the dashboard: a finished job with captured state (the real
worker's frame, stored by tower's store) has a "continue" box; continuing it opens the
next turn's page, whose session thread lists both turns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect

from tests.integration.conftest import db, pool
from tests.integration.test_sessions_api import finished_turn, session_frame
from tests.unit.test_worker import WorkerProcess, workers
from tower.db.pool import Pool

__all__ = ["db", "pool", "workers"]  # the fixtures


async def test_a_finished_job_is_continued_from_its_page_and_shows_its_thread(
    page: Page, tower_url: str, db: Any, pool: Pool, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    parent = await finished_turn(db, pool, session_frame(tmp_path, workers))
    await page.goto(f"{tower_url}/ui/#/jobs/{parent}")

    await page.get_by_label("Next prompt").fill("now the empty case")
    await page.get_by_role("button", name="Continue").click()

    await expect(page.locator(".session-thread .turn")).to_have_count(2)
    current = page.locator(".session-thread .turn.current")
    await expect(current).to_contain_text("Turn 2")
    child = await current.get_attribute("data-job-id")
    assert child and child != parent and page.url.endswith(child)
    await expect(page.locator(".session-thread .turn").first).to_contain_text(parent)
    await expect(page.locator(".job-status .badge")).to_have_text("completed")
