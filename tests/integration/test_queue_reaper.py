"""The reaper: expired leases are requeued or failed as tower_lost, once, even when racing."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from tests.support.towers import insert_job
from tower.db import channels
from tower.db.pool import Pool
from tower.execution.runner import ClaimedJob
from tower.queue import queries
from tower.queue.reaper import Reaper
from tower.settings import Settings

LEASE = 30.0
DONE = queries.Finish("completed", 0, "late", None, None, None, 1)


def _reaper(database_url: str, pool: Pool, name: str = "reaper") -> Reaper:
    return Reaper(Settings(database_url=database_url, lease_seconds=LEASE), pool, name)


async def _claim(db: Any, count: int, max_attempts: int) -> list[ClaimedJob]:
    for _ in range(count):
        await insert_job(db, "sleep 30", max_attempts=max_attempts)
    return await queries.claim(db, "dead-owner", LEASE, count)


async def _expire(db: Any, jobs: list[ClaimedJob]) -> None:
    ids = [job.job_id for job in jobs]
    await db.execute(
        "UPDATE jobs SET lease_until = now() - interval '1 second' WHERE job_id = ANY($1)", ids
    )


async def _row(db: Any, job_id: str) -> dict[str, Any]:
    return dict(await db.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id))


async def test_expired_lease_with_attempts_left_is_requeued(
    db: Any, pool: Pool, database_url: str
) -> None:
    (job,) = await _claim(db, 1, max_attempts=2)
    await _expire(db, [job])

    assert await _reaper(database_url, pool).reap_once() == {job.job_id: "pending"}

    row = await _row(db, job.job_id)
    assert (row["status"], row["attempt"], row["failure_reason"]) == ("pending", 1, None)
    assert (row["lease_owner"], row["lease_token"], row["lease_until"]) == (None, None, None)
    (again,) = await queries.claim(db, "survivor", LEASE, 1)
    assert (again.job_id, again.attempt) == (job.job_id, 2)


async def test_expired_lease_on_the_last_attempt_fails_as_tower_lost(
    db: Any, pool: Pool, database_url: str
) -> None:
    (job,) = await _claim(db, 1, max_attempts=1)
    await _expire(db, [job])
    finished: asyncio.Queue[str] = asyncio.Queue()

    def on_finished(*args: Any) -> None:
        finished.put_nowait(args[-1])

    async with pool.acquire() as listener:
        await listener.add_listener(channels.JOB_FINISHED, on_finished)
        assert await _reaper(database_url, pool).reap_once() == {job.job_id: "failed"}
        announced = await asyncio.wait_for(finished.get(), timeout=10)
        await listener.remove_listener(channels.JOB_FINISHED, on_finished)

    assert announced == job.job_id
    row = await _row(db, job.job_id)
    assert (row["status"], row["failure_reason"]) == ("failed", "tower_lost")
    assert row["finished_at"] is not None and row["lease_token"] is None


async def test_live_leases_are_left_alone(db: Any, pool: Pool, database_url: str) -> None:
    (job,) = await _claim(db, 1, max_attempts=2)
    before = await _row(db, job.job_id)

    assert await _reaper(database_url, pool).reap_once() == {}

    assert await _row(db, job.job_id) == before


async def test_the_dead_owner_cannot_write_after_the_reap(
    db: Any, pool: Pool, database_url: str
) -> None:
    (job,) = await _claim(db, 1, max_attempts=2)
    await _expire(db, [job])
    await _reaper(database_url, pool).reap_once()
    await queries.claim(db, "survivor", LEASE, 1)
    before = await _row(db, job.job_id)

    assert not await queries.finish(db, job.job_id, job.lease_token, DONE)
    assert await queries.heartbeat(db, [job.lease_token], LEASE) == set()
    assert await queries.release(db, job.job_id, job.lease_token) is None

    assert await _row(db, job.job_id) == before


async def test_racing_reapers_hand_back_each_job_once(
    db: Any, pool: Pool, database_url: str
) -> None:
    jobs = await _claim(db, 40, max_attempts=2) + await _claim(db, 40, max_attempts=1)
    await _expire(db, jobs)
    reapers = [_reaper(database_url, pool, f"reaper-{n}") for n in range(4)]

    rounds = await asyncio.gather(*(reaper.reap_once() for reaper in reapers))

    counts = Counter(job_id for reaped in rounds for job_id in reaped)
    assert set(counts) == {job.job_id for job in jobs}
    assert max(counts.values()) == 1
    statuses = Counter(row["status"] for row in await db.fetch("SELECT status FROM jobs"))
    assert statuses == {"pending": 40, "failed": 40}
    # Nothing was reaped twice, so no job lost an attempt it did not use.
    assert await db.fetchval("SELECT max(attempt) FROM jobs") == 1


async def test_owners_get_a_lease_to_renew_before_the_first_reap(
    db: Any, pool: Pool, database_url: str
) -> None:
    # As after a database outage: every lease has lapsed, the owner is alive.
    (job,) = await _claim(db, 1, max_attempts=1)
    await _expire(db, [job])
    reaper = _reaper(database_url, pool)

    await reaper.run_round()
    await reaper.run_round()

    assert await queries.heartbeat(db, [job.lease_token], LEASE) == {job.lease_token}
    assert (await _row(db, job.job_id))["status"] == "running"


async def test_scheduled_rounds_reap_once_the_grace_has_passed(
    db: Any, pool: Pool, database_url: str
) -> None:
    (job,) = await _claim(db, 1, max_attempts=1)
    await _expire(db, [job])
    reaper = Reaper(Settings(database_url=database_url, lease_seconds=1), pool, "reaper")

    async with asyncio.timeout(15):
        while (await _row(db, job.job_id))["status"] == "running":
            await reaper.run_round()
            await asyncio.sleep(0.1)

    assert (await _row(db, job.job_id))["failure_reason"] == "tower_lost"


async def test_the_database_settles_for_a_lease_after_it_started(db: Any) -> None:
    uptime = float(
        await db.fetchval("SELECT extract(epoch FROM now() - pg_postmaster_start_time())")
    )

    # A lease longer than the server has been up: as if it had just restarted.
    assert await queries.database_settling(db, uptime + LEASE)
    assert not await queries.database_settling(db, uptime / 2)
