"""Retention deletes exactly the expired or surplus finished jobs, and old idempotency keys."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.support.towers import insert_job
from tower.db.pool import Pool
from tower.queue import queries
from tower.queue.retention import Cleaned, Retention
from tower.settings import Settings


def _retention(database_url: str, pool: Pool, **settings: int) -> Retention:
    return Retention(Settings(database_url=database_url, **settings), pool)


async def _job(db: Any, status: str, hours_ago: float, finished: bool = True) -> str:
    """A job created and (if `finished`) finished `hours_ago` hours ago."""
    job_id = await insert_job(db, "print x")
    await db.execute(
        """
        UPDATE jobs SET status = $2,
               created_at = now() - make_interval(secs => $3 * 3600 + 1),
               finished_at = CASE WHEN $4 THEN now() - make_interval(secs => $3 * 3600) END
        WHERE job_id = $1
        """,
        job_id,
        status,
        hours_ago,
        finished,
    )
    return job_id


async def _remaining(db: Any) -> set[str]:
    return {row["job_id"] for row in await db.fetch("SELECT job_id FROM jobs")}


async def test_finished_jobs_older_than_the_ttl_are_deleted(
    db: Any, pool: Pool, database_url: str
) -> None:
    old = [await _job(db, status, 30) for status in ("completed", "failed", "cancelled")]
    old_unfinished_cancel = await _job(db, "cancelled", 30, finished=False)
    recent = [await _job(db, status, 10) for status in ("completed", "failed", "cancelled")]
    old_live = [await _job(db, status, 30, finished=False) for status in ("pending", "running")]

    cleaned = await _retention(database_url, pool, job_ttl_hours=24).clean_once()

    assert cleaned == Cleaned(expired_jobs=4)
    assert old_unfinished_cancel not in await _remaining(db)
    assert await _remaining(db) == set(recent + old_live)
    assert not set(old) & await _remaining(db)


async def test_finished_jobs_beyond_the_newest_n_are_deleted(
    db: Any, pool: Pool, database_url: str
) -> None:
    finished = [await _job(db, "completed", hours) for hours in (5, 4, 3, 2, 1)]
    live = [await _job(db, "pending", 9, finished=False), await _job(db, "running", 9, False)]

    cleaned = await _retention(database_url, pool, max_retained_jobs=3).clean_once()

    assert cleaned == Cleaned(surplus_jobs=2)
    assert await _remaining(db) == set(finished[2:] + live)


async def test_old_idempotency_keys_are_deleted(db: Any, pool: Pool, database_url: str) -> None:
    job_id = await _job(db, "pending", 0, finished=False)
    for key, hours in (("old", 30), ("fresh", 1)):
        await db.execute(
            "INSERT INTO idempotency_keys (key, request_hash, job_id, created_at)"
            " VALUES ($1, 'h', $2, now() - make_interval(hours => $3))",
            key,
            job_id,
            hours,
        )

    cleaned = await _retention(database_url, pool, idempotency_ttl_hours=24).clean_once()

    assert cleaned == Cleaned(idempotency_keys=1)
    assert [row["key"] for row in await db.fetch("SELECT key FROM idempotency_keys")] == ["fresh"]


async def test_one_replica_at_a_time(db: Any, pool: Pool, database_url: str) -> None:
    old = await _job(db, "completed", 30)
    other_replica = await asyncpg.connect(database_url)
    try:
        async with other_replica.transaction():
            assert await queries.try_retention_lock(other_replica)
            skipped = await _retention(database_url, pool, job_ttl_hours=24).clean_once()
    finally:
        await other_replica.close()

    assert skipped is None
    assert old in await _remaining(db)
    assert await _retention(database_url, pool, job_ttl_hours=24).clean_once() == Cleaned(
        expired_jobs=1
    )
