"""Claiming: one statement, each job to exactly one claimer, in priority order."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from tests.support.towers import insert_job
from tower.db.pool import Pool, create_pool
from tower.queue import queries

LEASE = 30.0
CLAIMERS = 16


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    pool = await create_pool(database_url, CLAIMERS + 1)
    yield pool
    await pool.close()


@pytest.fixture
async def db(pool: Pool) -> AsyncIterator[Any]:
    async with pool.acquire() as connection:
        yield connection


async def _claim_until_empty(pool: Pool, owner: str, batch: int) -> list[str]:
    claimed: list[str] = []
    async with pool.acquire() as connection:
        while jobs := await queries.claim(connection, owner, LEASE, batch):
            claimed.extend(job.job_id for job in jobs)
    return claimed


async def test_concurrent_claimers_take_each_job_exactly_once(db: Any, pool: Pool) -> None:
    submitted = {await insert_job(db, "print x") for _ in range(300)}
    owners = [f"claimer-{n}" for n in range(CLAIMERS)]

    # Each claimer holds its own connection for the whole race.
    results = await asyncio.gather(*(_claim_until_empty(pool, owner, batch=3) for owner in owners))

    counts = Counter(job_id for claimed in results for job_id in claimed)
    assert set(counts) == submitted
    assert max(counts.values()) == 1
    rows = await db.fetch("SELECT job_id, lease_owner, attempt, status FROM jobs")
    owner_of = {
        job_id: owner for owner, claimed in zip(owners, results, strict=True) for job_id in claimed
    }
    assert all(row["status"] == "running" and row["attempt"] == 1 for row in rows)
    assert all(row["lease_owner"] == owner_of[row["job_id"]] for row in rows)
    # The race was real: more than one claimer won some jobs.
    assert sum(1 for claimed in results if claimed) > 1


async def test_claim_sets_the_lease(db: Any) -> None:
    job_id = await insert_job(db, "print x")

    (job,) = await queries.claim(db, "me", LEASE, 5)

    row = await db.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id)
    assert job.job_id == job_id and job.attempt == 1
    assert job.request["prompt"] == "print x"
    assert row["status"] == "running"
    assert row["lease_owner"] == "me"
    assert row["lease_token"] == job.lease_token
    assert row["started_at"] is not None
    lease = (row["lease_until"] - row["started_at"]).total_seconds()
    assert lease == pytest.approx(LEASE)


async def test_claim_respects_the_limit(db: Any) -> None:
    for _ in range(5):
        await insert_job(db, "print x")

    assert len(await queries.claim(db, "me", LEASE, 2)) == 2
    assert len(await queries.claim(db, "me", LEASE, 10)) == 3
    assert await queries.claim(db, "me", LEASE, 10) == []


async def test_claim_skips_rows_locked_by_another_transaction(db: Any, database_url: str) -> None:
    first = await insert_job(db, "print first", priority=5)
    second = await insert_job(db, "print second")
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM jobs WHERE job_id = $1 FOR UPDATE", first)
            # Without SKIP LOCKED this would block on `first` until the holder commits.
            jobs = await asyncio.wait_for(queries.claim(db, "me", LEASE, 2), timeout=10)
    finally:
        await holder.close()

    assert [job.job_id for job in jobs] == [second]


async def test_claim_order_is_priority_then_age(db: Any) -> None:
    old_low = await insert_job(db, "print x", priority=0)
    high = await insert_job(db, "print x", priority=9)
    new_low = await insert_job(db, "print x", priority=0)
    middle = await insert_job(db, "print x", priority=3)

    order = [(await queries.claim(db, "me", LEASE, 1))[0].job_id for _ in range(4)]

    assert order == [high, middle, old_low, new_low]


async def test_claim_waits_for_run_after(db: Any) -> None:
    later = await insert_job(db, "print x", delay_seconds=3600)
    now = await insert_job(db, "print x")

    jobs = await queries.claim(db, "me", LEASE, 10)

    assert [job.job_id for job in jobs] == [now]
    assert await db.fetchval("SELECT status FROM jobs WHERE job_id = $1", later) == "pending"
    await db.execute("UPDATE jobs SET run_after = now() - interval '1 second'")
    assert [job.job_id for job in await queries.claim(db, "me", LEASE, 10)] == [later]


async def test_claim_ignores_running_and_terminal_jobs(db: Any) -> None:
    for status in ("running", "completed", "failed", "cancelled"):
        job_id = await insert_job(db, "print x")
        await db.execute("UPDATE jobs SET status = $2 WHERE job_id = $1", job_id, status)

    assert await queries.claim(db, "me", LEASE, 10) == []
