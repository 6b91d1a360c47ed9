"""Retention keeps a finished job while its Idempotency-Key is live, so a retry within
IDEMPOTENCY_TTL_HOURS replays the job instead of making a second one; once the key
is older than the TTL, the job is deleted like any other."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.support.live import client_for, live_tower
from tests.support.towers import insert_job
from tower.db.pool import Pool
from tower.execution.simulated import SimulatedRunner
from tower.queue.retention import Cleaned, Retention
from tower.settings import Settings

BODY = {"agent_id": "idem", "engine": "claude-code", "prompt": "print done"}
KEY = "order-retained"


def _settings(database_url: str) -> Settings:
    # Keep one finished job, expire finished jobs after 1 h, remember keys for 24 h;
    # the tower's own retention round waits a day, so only clean_once below runs.
    return Settings(
        database_url=database_url,
        tower_runner="simulated",
        max_retained_jobs=1,
        job_ttl_hours=1,
        idempotency_ttl_hours=24,
        cleanup_interval=86400,
    )


async def _age(db: Any, job_id: str, minutes: float) -> None:
    """Make a job completed, created and finished `minutes` ago."""
    await db.execute(
        """
        UPDATE jobs SET status = 'completed',
               created_at = now() - make_interval(mins => $2 + 1),
               finished_at = now() - make_interval(mins => $2)
        WHERE job_id = $1
        """,
        job_id,
        minutes,
    )


async def _finished(client: httpx.AsyncClient, job_id: str) -> None:
    for _ in range(500):
        if (await client.get(f"/jobs/{job_id}")).json()["status"] == "completed":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{job_id} did not complete")


async def _remaining(db: Any) -> set[str]:
    return {row["job_id"] for row in await db.fetch("SELECT job_id FROM jobs")}


async def test_a_live_key_keeps_its_job_through_retention(
    db: Any, pool: Pool, database_url: str
) -> None:
    settings = _settings(database_url)
    retention = Retention(settings, pool)
    async with live_tower(settings, SimulatedRunner()) as url, client_for(url) as client:
        first = await client.post("/jobs", json=BODY, headers={"Idempotency-Key": KEY})
        assert first.status_code == 202
        keyed = first.json()["job_id"]
        await _finished(client, keyed)
        # The keyed job finished 2 h ago (past JOB_TTL_HOURS, and the oldest, so surplus
        # too), its key 2 h old (live); beside it an expired job and two recent ones.
        await _age(db, keyed, 120)
        await db.execute(
            "UPDATE idempotency_keys SET created_at = now() - make_interval(hours => 2)"
            " WHERE key = $1",
            KEY,
        )
        expired, surplus, newest = [
            await insert_job(db, "print x", delay_seconds=3600) for _ in range(3)
        ]  # not claimable: _age finishes them
        for job_id, minutes in ((expired, 120), (surplus, 20), (newest, 10)):
            await _age(db, job_id, minutes)

        assert await retention.clean_once() == Cleaned(expired_jobs=1, surplus_jobs=1)
        assert await _remaining(db) == {keyed, newest}

        retry = await client.post("/jobs", json=BODY, headers={"Idempotency-Key": KEY})
        assert retry.status_code == 202
        assert retry.headers.get("Idempotent-Replayed") == "true"
        assert retry.json()["job_id"] == keyed
        assert await _remaining(db) == {keyed, newest}

        # Past the idempotency TTL the key no longer protects the job.
        await db.execute(
            "UPDATE idempotency_keys SET created_at = now() - make_interval(hours => 25)"
            " WHERE key = $1",
            KEY,
        )
        assert await retention.clean_once() == Cleaned(expired_jobs=1)
        assert await _remaining(db) == {newest}
        assert await db.fetchval("SELECT count(*) FROM idempotency_keys") == 0
