"""Group commit: writes that arrive during a batch share the next one; each keeps its fate."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from tests.support.towers import insert_job
from tower.db import lifecycle
from tower.db.group_commit import GroupCommit
from tower.db.pool import Connection, Pool
from tower.jobs import queries as job_queries
from tower.queue import queries

DONE = queries.Finish("completed", 0, "ok", None, None, None, 5)


def _job_row(job_id: str) -> tuple[Any, ...]:
    return (job_id, "gc", "claude-code", "default", {"prompt": ""}, 0, 1, "default", None)


async def _statuses(pool: Pool, job_ids: list[str]) -> dict[str, str]:
    rows = await pool.fetch("SELECT job_id, status FROM jobs WHERE job_id = ANY($1)", job_ids)
    return {row["job_id"]: row["status"] for row in rows}


async def test_writes_arriving_during_a_batch_share_the_next_commit(pool: Pool) -> None:
    first_started = asyncio.Event()
    release_first = asyncio.Event()
    batches: list[list[tuple[Any, ...]]] = []

    async def write(connection: Connection, rows: list[tuple[Any, ...]]) -> list[None]:
        batches.append(rows)
        if len(batches) == 1:
            first_started.set()
            await release_first.wait()
        return await job_queries.insert_jobs(connection, rows)

    inserts = GroupCommit(pool, write, "test-inserts")
    ids = [f"gc-{uuid.uuid4().hex[:12]}" for _ in range(6)]
    first = asyncio.create_task(inserts.write(_job_row(ids[0])))
    await first_started.wait()
    rest = [asyncio.create_task(inserts.write(_job_row(job_id))) for job_id in ids[1:]]
    await asyncio.sleep(0)  # every later write is queued behind the batch in flight
    release_first.set()
    await asyncio.gather(first, *rest)

    assert [len(batch) for batch in batches] == [1, 5]
    assert await _statuses(pool, ids) == dict.fromkeys(ids, "pending")


async def test_a_bad_row_fails_alone_and_its_batch_neighbours_commit(pool: Pool) -> None:
    inserts = GroupCommit(pool, job_queries.insert_jobs, "test-inserts")
    good = [f"gc-{uuid.uuid4().hex[:12]}" for _ in range(3)]
    taken = f"gc-{uuid.uuid4().hex[:12]}"
    await pool.execute(lifecycle.INSERT_JOB, *_job_row(taken))

    outcomes = await asyncio.gather(
        *(inserts.write(_job_row(job_id)) for job_id in [good[0], taken, *good[1:]]),
        return_exceptions=True,
    )

    assert isinstance(outcomes[1], asyncpg.UniqueViolationError)
    assert [outcomes[0], *outcomes[2:]] == [None, None, None]
    assert await _statuses(pool, good) == dict.fromkeys(good, "pending")


async def test_finishes_in_one_batch_are_each_fenced_by_their_own_token(pool: Pool) -> None:
    async with pool.acquire() as connection:
        for _ in range(3):
            await insert_job(connection, "")
        jobs = await queries.claim(connection, "owner", 30.0, 3)
    assert len(jobs) == 3
    writes = [
        queries.FinishOf(jobs[0].job_id, jobs[0].lease_token, DONE),
        queries.FinishOf(jobs[1].job_id, uuid.uuid4(), DONE),  # a stale owner
        queries.FinishOf(jobs[2].job_id, jobs[2].lease_token, DONE),
    ]
    finishes = GroupCommit(pool, queries.finish_many, "test-finishes")

    written = await asyncio.gather(*(finishes.write(write) for write in writes))

    assert written == [True, False, True]
    ids = [job.job_id for job in jobs]
    assert await _statuses(pool, ids) == {
        ids[0]: "completed",
        ids[1]: "running",
        ids[2]: "completed",
    }


async def test_a_caller_that_goes_away_does_not_cancel_the_batch(pool: Pool) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def write(connection: Connection, rows: list[tuple[Any, ...]]) -> list[None]:
        started.set()
        await release.wait()
        return await job_queries.insert_jobs(connection, rows)

    inserts = GroupCommit(pool, write, "test-inserts")
    job_id = f"gc-{uuid.uuid4().hex[:12]}"
    caller = asyncio.create_task(inserts.write(_job_row(job_id)))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    release.set()
    await inserts.close()

    assert await _statuses(pool, [job_id]) == {job_id: "pending"}
