"""SIGTERM on a real tower process: it stops claiming at once, lets running jobs finish
within SHUTDOWN_GRACE_SECONDS, hands back the rest through their leases, and exits."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.metrics import until_open_streams
from tests.support.towers import TowerProcess, cancel_job, insert_job, start_tower
from tower.jobs.service import SHUTTING_DOWN

pytestmark = pytest.mark.slow

DEADLINE = 60.0  # a bound on waiting for the system to settle, not an expectation of speed
DRAINING = "draining: no new claims"


async def _row(database_url: str, job_id: str) -> dict[str, Any]:
    connection = await asyncpg.connect(database_url)
    try:
        return dict(await connection.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id))
    finally:
        await connection.close()


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll until `check()` holds; there is no event to wait on across processes."""
    async with asyncio.timeout(DEADLINE):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


async def _status_is(database_url: str, job_id: str, status: str) -> None:
    async def check() -> bool:
        return (await _row(database_url, job_id))["status"] == status

    await _until(check)


async def _sigterm_and_wait_for_drain(tower: TowerProcess) -> float:
    sent = time.monotonic()
    tower.process.terminate()

    async def draining() -> bool:
        return DRAINING in tower.log()

    await _until(draining)
    return sent


async def _exit_code(tower: TowerProcess) -> int:
    return await asyncio.to_thread(tower.process.wait, DEADLINE)


async def _hold_a_long_poll(tower: TowerProcess, job_id: str) -> asyncio.Task[Any]:
    """An open /wait request, held until the tower begins to stop. Returns once the tower
    holds it: a request still in flight when the signal lands is closed unanswered, as
    uvicorn closes idle connections, and its client retries on a new one."""
    client = httpx.AsyncClient(base_url=tower.base_url, timeout=DEADLINE)

    async def wait() -> Any:
        async with client:
            try:
                return await client.get(f"/jobs/{job_id}/wait", params={"timeout": 600})
            except httpx.HTTPError as error:
                return error

    task = asyncio.create_task(wait())
    async with httpx.AsyncClient(base_url=tower.base_url, timeout=DEADLINE) as probe:
        await until_open_streams(probe, {"wait": 1, "events": 0}, DEADLINE)
    return task


async def test_sigterm_lets_the_running_job_finish_and_claims_nothing_new(
    database_url: str, tmp_path: Path
) -> None:
    db = await asyncpg.connect(database_url)
    try:
        tower = await start_tower(
            database_url, tmp_path, "tower-a", shutdown_grace_seconds=DEADLINE, poll_interval=0.2
        )
        running = await insert_job(db, "sleep 2\nprint finished in the grace")
        await _status_is(database_url, running, "running")
        blocker = await insert_job(db, "sleep 600")
        await _status_is(database_url, blocker, "running")
        long_poll = await _hold_a_long_poll(tower, blocker)

        await _sigterm_and_wait_for_drain(tower)
        # The HTTP side is still winding down (the open long poll): claims must be over.
        queued = await insert_job(db, "print for another tower")
        # The long poll is answered at once: its client asks again, elsewhere.
        answer = await long_poll
        assert isinstance(answer, httpx.Response), answer
        assert (answer.status_code, answer.json()["detail"]) == (503, SHUTTING_DOWN)
        assert await cancel_job(db, blocker)  # a cancel during the grace still stops its run
        assert await _exit_code(tower) == 0

        row = await _row(database_url, running)
        assert (row["status"], row["result"], row["ran_by"]) == (
            "completed",
            "finished in the grace",
            "tower-a",
        )
        assert (await _row(database_url, blocker))["status"] == "cancelled"
        row = await _row(database_url, queued)
        assert (row["status"], row["attempt"], row["ran_by"]) == ("pending", 0, None)

        successor = await start_tower(database_url, tmp_path, "tower-b", poll_interval=0.2)
        try:
            await _status_is(database_url, queued, "completed")
            assert (await _row(database_url, queued))["ran_by"] == "tower-b"
        finally:
            successor.terminate()
    finally:
        await db.close()


@pytest.mark.parametrize(("max_attempts", "status"), [(2, "pending"), (1, "failed")])
async def test_sigterm_hands_back_a_job_that_outlives_the_grace(
    database_url: str, tmp_path: Path, max_attempts: int, status: str
) -> None:
    grace = 1.0
    db = await asyncpg.connect(database_url)
    try:
        tower = await start_tower(database_url, tmp_path, "tower-a", shutdown_grace_seconds=grace)
        job_id = await insert_job(db, "sleep 600", max_attempts=max_attempts)
        await _status_is(database_url, job_id, "running")

        sent = await _sigterm_and_wait_for_drain(tower)
        assert await _exit_code(tower) == 0
        stopped_after = time.monotonic() - sent

        row = await _row(database_url, job_id)
        assert (row["status"], row["attempt"], row["lease_token"]) == (status, 1, None)
        if status == "failed":
            assert row["failure_reason"] == "tower_lost"
        # Handed back on stop, not left for the reaper a lease later; a loose liveness bound.
        assert stopped_after < grace + 20
        assert "handing back 1 job(s)" in tower.log()
    finally:
        await db.close()


@pytest.mark.parametrize("again", [signal.SIGTERM, signal.SIGINT])
async def test_a_second_signal_hands_the_running_job_back_without_its_grace(
    database_url: str, tmp_path: Path, again: signal.Signals
) -> None:
    # A second Ctrl-C makes uvicorn skip the app's shutdown: the hand-back must still run.
    db = await asyncpg.connect(database_url)
    try:
        tower = await start_tower(
            database_url, tmp_path, "tower-a", shutdown_grace_seconds=3600, poll_interval=0.2
        )
        job_id = await insert_job(db, "sleep 600", max_attempts=2)
        await _status_is(database_url, job_id, "running")

        await _sigterm_and_wait_for_drain(tower)
        tower.process.send_signal(again)
        await _exit_code(tower)  # within DEADLINE, so not after the hour of grace

        row = await _row(database_url, job_id)
        assert (row["status"], row["attempt"], row["lease_token"]) == ("pending", 1, None)
        assert "stop asked again" in tower.log()
        assert "handing back 1 job(s)" in tower.log()
    finally:
        await db.close()
