"""Fencing: an owner's write counts only while its lease token holds; terminal is final."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.support.towers import cancel_job, insert_job
from tower.db import channels
from tower.db.pool import Pool
from tower.execution.runner import ClaimedJob
from tower.queue import queries

LEASE = 30.0
DONE = queries.Finish("completed", 0, "ok", None, None, {"input_tokens": 3}, 12)


async def _claim_one(db: Any, prompt: str = "print x", max_attempts: int = 1) -> ClaimedJob:
    await insert_job(db, prompt, max_attempts=max_attempts)
    (job,) = await queries.claim(db, "owner", LEASE, 1)
    return job


async def _row(db: Any, job_id: str) -> dict[str, Any]:
    return dict(await db.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id))


async def test_finish_with_the_token_writes_the_outcome(db: Any) -> None:
    job = await _claim_one(db)

    assert await queries.finish(db, job.job_id, job.lease_token, DONE)

    row = await _row(db, job.job_id)
    assert row["status"] == "completed"
    assert (row["exit_code"], row["result"], row["usage"], row["duration_ms"]) == (
        0,
        "ok",
        {"input_tokens": 3},
        12,
    )
    assert row["finished_at"] is not None
    assert (row["lease_owner"], row["lease_token"], row["lease_until"]) == (None, None, None)


async def test_finish_with_a_stale_token_changes_nothing(db: Any) -> None:
    job = await _claim_one(db)
    before = await _row(db, job.job_id)

    assert not await queries.finish(db, job.job_id, uuid.uuid4(), DONE)

    assert await _row(db, job.job_id) == before


async def test_heartbeat_extends_only_held_leases(db: Any) -> None:
    job = await _claim_one(db)
    await db.execute("UPDATE jobs SET lease_until = now() WHERE job_id = $1", job.job_id)

    held = await queries.heartbeat(db, [job.lease_token, uuid.uuid4()], LEASE)

    assert held == {job.lease_token}
    row = await _row(db, job.job_id)
    assert (row["lease_until"] - row["started_at"]).total_seconds() > LEASE / 2


async def test_heartbeat_with_a_stale_token_changes_nothing(db: Any) -> None:
    job = await _claim_one(db)
    before = await _row(db, job.job_id)

    assert await queries.heartbeat(db, [uuid.uuid4()], LEASE) == set()

    assert await _row(db, job.job_id) == before


@pytest.mark.parametrize("final", ["completed", "failed", "cancelled"])
async def test_terminal_states_are_final(db: Any, final: str) -> None:
    job = await _claim_one(db, max_attempts=3)
    # Leave the lease columns in place, expired, so only the status protects the row.
    await db.execute(
        "UPDATE jobs SET status = $2, finished_at = now(), lease_until = now() - interval '1h'"
        " WHERE job_id = $1",
        job.job_id,
        final,
    )
    before = await _row(db, job.job_id)

    assert not await queries.finish(db, job.job_id, job.lease_token, DONE)
    assert await queries.heartbeat(db, [job.lease_token], LEASE) == set()
    assert await queries.release(db, job.job_id, job.lease_token) is None
    assert await queries.reap(db) == {}

    assert await _row(db, job.job_id) == before


async def test_a_cancelled_running_job_cannot_be_finished(db: Any) -> None:
    job = await _claim_one(db)

    assert await cancel_job(db, job.job_id)

    assert not await queries.finish(db, job.job_id, job.lease_token, DONE)
    assert (await _row(db, job.job_id))["status"] == "cancelled"


async def test_finish_notifies_only_when_it_wrote(db: Any, pool: Pool) -> None:
    fenced = await _claim_one(db)
    finished = await _claim_one(db)
    notified: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(*args: Any) -> None:
        notified.put_nowait(args[-1])

    async with pool.acquire() as listener:
        await listener.add_listener(channels.JOB_FINISHED, on_notify)
        await queries.finish(db, fenced.job_id, uuid.uuid4(), DONE)
        await queries.finish(db, finished.job_id, finished.lease_token, DONE)

        # Notifications arrive in commit order: a notice for the fenced write would come first.
        first = await asyncio.wait_for(notified.get(), timeout=10)
        await listener.remove_listener(channels.JOB_FINISHED, on_notify)

    assert first == finished.job_id


async def test_release_requeues_while_attempts_remain(db: Any) -> None:
    job = await _claim_one(db, max_attempts=2)

    assert await queries.release(db, job.job_id, job.lease_token) == "pending"

    row = await _row(db, job.job_id)
    assert (row["status"], row["attempt"], row["lease_token"], row["finished_at"]) == (
        "pending",
        1,
        None,
        None,
    )
    (again,) = await queries.claim(db, "other", LEASE, 1)
    assert (again.job_id, again.attempt) == (job.job_id, 2)


async def test_release_fails_the_last_attempt_as_tower_lost(db: Any) -> None:
    job = await _claim_one(db, max_attempts=1)

    assert await queries.release(db, job.job_id, job.lease_token) == "failed"

    row = await _row(db, job.job_id)
    assert (row["status"], row["failure_reason"]) == ("failed", "tower_lost")
    assert row["finished_at"] is not None and row["error"]
