"""The outbox at the SQL level: written by every terminal write and only by those, with
its NOTIFY; claimed by one replica at a time; an owner's answer fenced by its attempt."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from tests.support.towers import insert_job
from tower.db import channels, lifecycle
from tower.db.pool import Pool
from tower.queue import queries
from tower.webhooks import queries as hooks
from tower.webhooks.queries import Answer

LEASE = 30.0
URL = "https://hooks.example.com/done"
DONE = queries.Finish("completed", 0, "ok", None, None, {"input_tokens": 3}, 12)
FAILED = queries.Finish("failed", 1, None, "boom", "error", None, 5)


async def deliveries(db: Any, job_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT * FROM webhook_deliveries WHERE job_id = $1 ORDER BY created_at", job_id
    )
    return [dict(row) for row in rows]


async def claimed_job(db: Any, *, webhook: bool = True, max_attempts: int = 1) -> Any:
    await insert_job(db, "print x", max_attempts=max_attempts, webhook_url=URL if webhook else None)
    (job,) = await queries.claim(db, "owner", LEASE, 1)
    return job


@pytest.fixture
async def wakeups(database_url: str) -> AsyncIterator[asyncio.Queue[str]]:
    """Every WEBHOOK_DUE notification, as it arrives on a LISTEN connection of its own."""
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(channels.WEBHOOK_DUE, lambda *args: received.put_nowait(args[3]))
    yield received
    await listener.close()


async def test_finish_queues_the_event_and_wakes_deliverers(
    db: Any, wakeups: asyncio.Queue[str]
) -> None:
    job = await claimed_job(db)
    assert await queries.finish(db, job.job_id, job.lease_token, DONE)
    (delivery,) = await deliveries(db, job.job_id)
    assert delivery["event_type"] == "job.completed"
    assert delivery["url"] == URL
    assert delivery["status"] == "pending" and delivery["attempts"] == 0
    assert delivery["delivery_id"].startswith("msg_")
    payload = delivery["payload"]
    assert payload["type"] == "job.completed"
    assert payload["data"]["job_id"] == job.job_id
    assert payload["data"]["result"] == "ok"
    assert payload["data"]["usage"] == {"input_tokens": 3}
    await asyncio.wait_for(wakeups.get(), 10)


async def test_no_webhook_url_no_row_no_notify(db: Any, wakeups: asyncio.Queue[str]) -> None:
    quiet = await claimed_job(db, webhook=False)
    assert await queries.finish(db, quiet.job_id, quiet.lease_token, DONE)
    # Notifications arrive in commit order: if the finish had sent one, it would come
    # before this marker.
    await db.execute("SELECT pg_notify($1, 'marker')", channels.WEBHOOK_DUE)
    assert await asyncio.wait_for(wakeups.get(), 10) == "marker"
    assert await deliveries(db, quiet.job_id) == []


async def test_a_fenced_finish_queues_nothing(db: Any) -> None:
    job = await claimed_job(db)
    assert not await queries.finish(db, job.job_id, uuid.uuid4(), DONE)
    assert await deliveries(db, job.job_id) == []


async def test_cancel_queues_the_cancelled_event(db: Any) -> None:
    job_id = await insert_job(db, "sleep 60", webhook_url=URL)
    assert await db.fetchval(lifecycle.CANCEL_JOB, job_id, None) == job_id
    assert [d["event_type"] for d in await deliveries(db, job_id)] == ["job.cancelled"]
    assert await db.fetchval(lifecycle.CANCEL_JOB, job_id, None) is None  # terminal is final
    assert len(await deliveries(db, job_id)) == 1


async def test_release_queues_only_when_the_job_fails(db: Any) -> None:
    requeued = await claimed_job(db, max_attempts=2)
    assert await queries.release(db, requeued.job_id, requeued.lease_token) == "pending"
    assert await deliveries(db, requeued.job_id) == []
    lost = await claimed_job(db)
    assert await queries.release(db, lost.job_id, lost.lease_token) == "failed"
    (delivery,) = await deliveries(db, lost.job_id)
    assert delivery["event_type"] == "job.failed"
    assert delivery["payload"]["data"]["failure_reason"] == "tower_lost"


async def test_the_reaper_queues_tower_lost(db: Any) -> None:
    job = await claimed_job(db)
    await db.execute("UPDATE jobs SET lease_until = now() - interval '1 s'")
    assert await queries.reap(db) == {job.job_id: "failed"}
    (delivery,) = await deliveries(db, job.job_id)
    assert delivery["payload"]["data"]["failure_reason"] == "tower_lost"


# --- claiming and answering -------------------------------------------------------------


async def finished_delivery(db: Any) -> str:
    job = await claimed_job(db)
    assert await queries.finish(db, job.job_id, job.lease_token, DONE)
    (delivery,) = await deliveries(db, job.job_id)
    return str(delivery["delivery_id"])


async def test_one_claimer_wins_each_delivery(db: Any, pool: Pool) -> None:
    ids = {await finished_delivery(db) for _ in range(6)}

    async def claim() -> list[hooks.Claimed]:
        async with pool.acquire() as connection:
            return await hooks.claim_due(connection, 6, LEASE, 10)

    rounds = await asyncio.gather(*(claim() for _ in range(6)))
    won = [c.delivery_id for round_ in rounds for c in round_]
    assert sorted(won) == sorted(ids)
    async with pool.acquire() as connection:
        assert await hooks.claim_due(connection, 6, LEASE, 10) == []  # held, not due


async def test_a_lapsed_hold_passes_the_delivery_on_and_fences_the_first(db: Any) -> None:
    delivery_id = await finished_delivery(db)
    (first,) = await hooks.claim_due(db, 1, LEASE, 10)
    # The first holder goes silent; its hold lapses.
    await db.execute("UPDATE webhook_deliveries SET next_attempt_at = now()")
    (second,) = await hooks.claim_due(db, 1, LEASE, 10)
    assert (first.attempt, second.attempt) == (1, 2)
    assert first.delivery_id == second.delivery_id == delivery_id
    late = Answer("delivered", 0, 200, None, 900)
    assert not await hooks.complete(db, first, late)  # recorded, but not moving it on
    assert await hooks.complete(db, second, Answer("pending", 60, 503, "HTTP 503", 4))
    row = await db.fetchrow(
        "SELECT status, attempts, next_attempt_at > now() + interval '50 s' AS later "
        "FROM webhook_deliveries WHERE delivery_id = $1",
        delivery_id,
    )
    assert (row["status"], row["attempts"], row["later"]) == ("pending", 2, True)
    attempts = await db.fetch(
        "SELECT attempt, status_code, error FROM webhook_attempts "
        "WHERE delivery_id = $1 ORDER BY attempt",
        delivery_id,
    )
    assert [tuple(a) for a in attempts] == [(1, 200, None), (2, 503, "HTTP 503")]


async def test_a_delivery_lost_on_its_last_attempt_fails(db: Any) -> None:
    delivery_id = await finished_delivery(db)
    (claimed,) = await hooks.claim_due(db, 1, LEASE, 1)
    await db.execute("UPDATE webhook_deliveries SET next_attempt_at = now()")
    assert await hooks.claim_due(db, 1, LEASE, 1) == []
    status = await db.fetchval(
        "SELECT status FROM webhook_deliveries WHERE delivery_id = $1", delivery_id
    )
    assert status == "failed"
    assert claimed.attempt == 1
    attempt = await db.fetchrow(
        "SELECT * FROM webhook_attempts WHERE delivery_id = $1", delivery_id
    )
    assert attempt["error"] == hooks.UNANSWERED
