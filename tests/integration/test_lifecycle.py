"""One test per transition of tower/db/lifecycle.py, on a real PostgreSQL: the job's new
status, the state event and (for a terminal one) the webhook outbox row written by the
same statement, the notification it sends, and the statement matching nothing from any
other status."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from tower.db import channels, lifecycle
from tower.db.statuses import JOB_STATUSES, TERMINAL_STATUSES
from tower.gateway import tokens
from tower.jobs.service import new_job_id

LEASE = 30.0
DEADLINE = 10.0  # a bound on waiting for a notification, never an expectation of speed
WEBHOOK = "https://hooks.example/parpaing"


@dataclass
class Heard:
    """Notifications on the lifecycle's channels, in the order they arrived."""

    queue: asyncio.Queue[tuple[str, str]]

    async def next(self) -> tuple[str, str]:
        return await asyncio.wait_for(self.queue.get(), DEADLINE)

    async def until(self, channel: str) -> str:
        while True:
            heard, payload = await self.next()
            if heard == channel:
                return payload


@pytest.fixture
async def heard(database_url: str) -> AsyncIterator[Heard]:
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    connection = await asyncpg.connect(database_url)
    for channel in channels.ALL:
        await connection.add_listener(channel, lambda _c, _p, ch, pl: queue.put_nowait((ch, pl)))
    yield Heard(queue)
    with contextlib.suppress(Exception):
        await connection.close()


async def insert(db: Any, *, max_attempts: int = 1) -> str:
    job_id = new_job_id("life")
    request = {"agent_id": "life", "engine": "claude-code", "prompt": "", "webhook_url": WEBHOOK}
    await db.execute(
        lifecycle.INSERT_JOB,
        *(job_id, "life", "claude-code", "default", request, 0, max_attempts, "default", None),
    )
    return job_id


async def claim(db: Any) -> Any:
    """CLAIM one job (this test's only pending one); its row as the statement returned it."""
    digest = tokens.digest(tokens.mint())
    (row,) = await db.fetch(
        lifecycle.CLAIM, "owner-a", LEASE, 1, [digest], channels.JOB_EVENT, 0, 1.0
    )
    return row


async def claimed_ids(db: Any, owner: str) -> list[str]:
    """What a CLAIM of one job by `owner` takes (its one row is NULLs when it takes none)."""
    rows = await db.fetch(lifecycle.CLAIM, owner, LEASE, 1, ["x"], channels.JOB_EVENT, 0, 1.0)
    return [row["job_id"] for row in rows if row["job_id"] is not None]


async def job(db: Any, job_id: str) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id)
    return dict(row)


async def state_events(db: Any, job_id: str) -> list[str]:
    rows = await db.fetch(
        "SELECT data FROM job_events WHERE job_id = $1 AND kind = 'state' ORDER BY seq", job_id
    )
    return [row["data"]["status"] for row in rows]


async def outbox(db: Any, job_id: str) -> list[str]:
    rows = await db.fetch(
        "SELECT event_type FROM webhook_deliveries WHERE job_id = $1 ORDER BY created_at", job_id
    )
    return [row["event_type"] for row in rows]


async def finish(db: Any, job_id: str, token: Any, status: str) -> list[Any]:
    return list(
        await db.fetch(
            lifecycle.FINISH, job_id, token, status, 0, "result", None, None, None, 7,
            channels.JOB_FINISHED,
        )
    )  # fmt: skip


async def release(db: Any, job_id: str, token: Any) -> list[Any]:
    args = (channels.JOB_PENDING, channels.JOB_FINISHED, job_id, token)
    return list(await db.fetch(lifecycle.RELEASE, lifecycle.LOST_BY_STOP, *args))


async def reap(db: Any, adopt_grace: float = 0.0) -> list[Any]:
    args = (lifecycle.LOST_BY_LEASE, channels.JOB_PENDING, channels.JOB_FINISHED, adopt_grace)
    return list(await db.fetch(lifecycle.REAP, *args))


async def busy_slot(db: Any, job_id: str, token: Any, docker_host: str = "host-a") -> str:
    """A pool slot whose container runs the job (as the warm pool's take leaves it)."""
    slot_id = new_job_id("slot")
    await db.execute(
        "INSERT INTO pool_slots (slot_id, docker_host, image, config_hash, container_id,"
        " status, job_id, lease_token) VALUES ($1, $2, 'img', 'cfg', 'c-' || $1, 'busy', $3, $4)",
        slot_id, docker_host, job_id, token,
    )  # fmt: skip
    return slot_id


async def adopt(db: Any, job_id: str, token: Any, docker_host: str = "host-a") -> list[Any]:
    args = ("owner-b", LEASE, docker_host, [job_id], [token])
    return list(await db.fetch(lifecycle.ADOPT, *args))


async def expire_lease(db: Any, job_id: str) -> None:
    await db.execute(
        "UPDATE jobs SET lease_until = now() - interval '1 second' WHERE job_id = $1", job_id
    )


async def test_insert_makes_a_pending_job(db: Any, heard: Heard) -> None:
    job_id = await insert(db)
    assert (await job(db, job_id))["status"] == "pending"
    assert await state_events(db, job_id) == ["pending"]
    assert await heard.until(channels.JOB_PENDING) == job_id


async def test_claim_moves_pending_to_running_with_a_lease_and_a_token(
    db: Any, heard: Heard
) -> None:
    job_id = await insert(db)
    claimed = await claim(db)
    row = await job(db, job_id)
    assert (claimed["job_id"], row["status"], row["attempt"]) == (job_id, "running", 1)
    assert row["lease_token"] == claimed["lease_token"] and row["gateway_token_sha256"]
    assert await state_events(db, job_id) == ["pending", "running"]
    assert await heard.until(channels.JOB_EVENT) == f"state {job_id}"
    assert await claimed_ids(db, "owner-b") == []


@pytest.mark.parametrize("status", ["completed", "failed"])
async def test_finish_moves_running_to_its_outcome(db: Any, heard: Heard, status: str) -> None:
    job_id = await insert(db)
    claimed = await claim(db)
    assert [row["job_id"] for row in await finish(db, job_id, claimed["lease_token"], status)] == [
        job_id
    ]
    row = await job(db, job_id)
    assert (row["status"], row["lease_token"], row["gateway_token_sha256"]) == (status, None, None)
    assert await state_events(db, job_id) == ["pending", "running", status]
    assert await outbox(db, job_id) == [f"job.{status}"]
    assert await heard.until(channels.JOB_FINISHED) == job_id
    assert await finish(db, job_id, claimed["lease_token"], status) == []  # fenced: final


async def test_release_hands_a_job_with_attempts_left_back_to_the_queue(
    db: Any, heard: Heard
) -> None:
    job_id = await insert(db, max_attempts=2)
    claimed = await claim(db)
    assert [row["status"] for row in await release(db, job_id, claimed["lease_token"])] == [
        "pending"
    ]
    row = await job(db, job_id)
    assert (row["status"], row["lease_token"], row["finished_at"]) == ("pending", None, None)
    assert await state_events(db, job_id) == ["pending", "running", "pending"]
    assert await outbox(db, job_id) == []
    await heard.until(channels.JOB_PENDING)  # the insert's
    assert await heard.until(channels.JOB_PENDING) == job_id  # the release's


async def test_release_fails_a_job_on_its_last_attempt(db: Any, heard: Heard) -> None:
    job_id = await insert(db, max_attempts=1)
    claimed = await claim(db)
    assert [row["status"] for row in await release(db, job_id, claimed["lease_token"])] == [
        "failed"
    ]
    row = await job(db, job_id)
    assert (row["status"], row["failure_reason"]) == ("failed", "tower_lost")
    assert row["error"] == lifecycle.LOST_BY_STOP
    assert await outbox(db, job_id) == ["job.failed"]
    assert await heard.until(channels.JOB_FINISHED) == job_id
    assert await release(db, job_id, claimed["lease_token"]) == []  # final


@pytest.mark.parametrize(("max_attempts", "after"), [(2, "pending"), (1, "failed")])
async def test_reap_releases_only_expired_leases(db: Any, max_attempts: int, after: str) -> None:
    job_id = await insert(db, max_attempts=max_attempts)
    await claim(db)
    assert job_id not in {row["job_id"] for row in await reap(db)}  # the lease still holds
    await expire_lease(db, job_id)
    assert {row["job_id"]: row["status"] for row in await reap(db)}.get(job_id) == after
    row = await job(db, job_id)
    assert row["status"] == after
    assert (row["error"] == lifecycle.LOST_BY_LEASE) is (after == "failed")
    assert await state_events(db, job_id) == ["pending", "running", after]


async def test_reap_leaves_a_job_with_a_container_for_adoption_a_while(db: Any) -> None:
    job_id = await insert(db)
    claimed = await claim(db)
    await busy_slot(db, job_id, claimed["lease_token"])
    await expire_lease(db, job_id)  # expired one second ago
    assert job_id not in {row["job_id"] for row in await reap(db, adopt_grace=LEASE)}
    assert {row["job_id"]: row["status"] for row in await reap(db, adopt_grace=0.5)} == {
        job_id: "failed"
    }


async def test_adopt_gives_an_expired_job_a_new_owner_and_the_same_attempt(db: Any) -> None:
    job_id = await insert(db)
    claimed = await claim(db)
    old_token = claimed["lease_token"]
    slot_id = await busy_slot(db, job_id, old_token)
    before = await job(db, job_id)
    assert await adopt(db, job_id, old_token) == []  # the lease still holds
    await expire_lease(db, job_id)
    assert await adopt(db, job_id, old_token, docker_host="host-b") == []  # not its host
    (row,) = await adopt(db, job_id, old_token)
    after = await job(db, job_id)
    assert (row["job_id"], row["slot_id"], row["container_id"]) == (job_id, slot_id, f"c-{slot_id}")
    assert row["lease_token"] == after["lease_token"] != old_token
    assert (after["status"], after["attempt"], after["lease_owner"]) == ("running", 1, "owner-b")
    assert after["gateway_token_sha256"] == before["gateway_token_sha256"]  # the agent goes on
    assert after["lease_until"] > before["lease_until"]
    slot_token = await db.fetchval("SELECT lease_token FROM pool_slots WHERE slot_id = $1", slot_id)
    assert slot_token == after["lease_token"]
    assert await state_events(db, job_id) == ["pending", "running"]  # no new status
    assert await finish(db, job_id, old_token, "completed") == []  # the old owner is fenced
    await expire_lease(db, job_id)
    assert await adopt(db, job_id, old_token) == []  # only as found


async def test_requeue_hands_a_job_back_without_counting_the_attempt(db: Any, heard: Heard) -> None:
    job_id = await insert(db, max_attempts=1)
    claimed = await claim(db)
    await heard.until(channels.JOB_PENDING)  # the insert's
    requeued = await db.fetch(
        lifecycle.REQUEUE, job_id, claimed["lease_token"], channels.JOB_PENDING
    )
    assert [row["job_id"] for row in requeued] == [job_id]
    row = await job(db, job_id)
    assert (row["status"], row["attempt"], row["lease_token"], row["gateway_token_sha256"]) == (
        "pending", 0, None, None,
    )  # fmt: skip
    assert await state_events(db, job_id) == ["pending", "running", "pending"]
    assert await outbox(db, job_id) == []
    assert await heard.until(channels.JOB_PENDING) == job_id
    assert (await claim(db))["attempt"] == 1  # its only attempt is still there
    stale = await db.fetch(lifecycle.REQUEUE, job_id, claimed["lease_token"], channels.JOB_PENDING)
    assert stale == []  # fenced: the earlier attempt's token


@pytest.mark.parametrize("claimed_first", [False, True])
async def test_cancel_moves_a_live_job_to_cancelled(
    db: Any, heard: Heard, claimed_first: bool
) -> None:
    job_id = await insert(db)
    if claimed_first:
        await claim(db)
    assert await db.fetchval(lifecycle.CANCEL_JOB, job_id, None) == job_id
    await db.execute(lifecycle.NOTIFY_CANCELLED, job_id)
    row = await job(db, job_id)
    assert (row["status"], row["lease_token"], row["gateway_token_sha256"]) == (
        "cancelled",
        None,
        None,
    )
    assert (await state_events(db, job_id))[-1] == "cancelled"
    assert await outbox(db, job_id) == ["job.cancelled"]
    assert await heard.until(channels.JOB_CANCELLED) == job_id
    assert await db.fetchval(lifecycle.CANCEL_JOB, job_id, None) is None  # final


@pytest.mark.parametrize("status", TERMINAL_STATUSES)
async def test_no_statement_moves_a_terminal_job(db: Any, status: str) -> None:
    job_id = await insert(db, max_attempts=5)
    claimed = await claim(db)
    if status == "cancelled":
        await db.fetchval(lifecycle.CANCEL_JOB, job_id, None)
    else:
        await finish(db, job_id, claimed["lease_token"], status)
    await expire_lease(db, job_id)
    before = await job(db, job_id)
    assert await claimed_ids(db, "b") == []
    assert await finish(db, job_id, claimed["lease_token"], "completed") == []
    assert await release(db, job_id, claimed["lease_token"]) == []
    assert job_id not in {row["job_id"] for row in await reap(db)}
    assert await adopt(db, job_id, claimed["lease_token"]) == []
    requeue = (lifecycle.REQUEUE, job_id, claimed["lease_token"], channels.JOB_PENDING)
    assert await db.fetch(*requeue) == []
    assert await db.fetchval(lifecycle.CANCEL_JOB, job_id, None) is None
    assert await job(db, job_id) == before
    assert status in JOB_STATUSES
