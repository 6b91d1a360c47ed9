"""Job events at the queue's level: the statements that change a job's state write its
events, the owner's log is lease-fenced, and the all-jobs stream delivers every state
event exactly once even when transactions commit out of id order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from tests.support.hub import running_hub
from tower.db import lifecycle
from tower.db.notify import NotifyHub
from tower.db.pool import Pool
from tower.events import queries as event_queries
from tower.events import service
from tower.events.cursor import StateCursor
from tower.events.log import JobLog
from tower.execution.runner import ClaimedJob
from tower.jobs.service import new_job_id
from tower.queue import queries

LEASE = 30.0
DEADLINE = 30.0  # a bound on waiting, never an expectation of speed


@pytest.fixture
async def hub(database_url: str) -> AsyncIterator[NotifyHub]:
    async with running_hub(database_url) as hub:
        yield hub


async def submit(db: Any, max_attempts: int = 1) -> str:
    """The jobs API's own INSERT (the job, its 'pending' event, its NOTIFY)."""
    job_id = new_job_id("q")
    request = {"agent_id": "q", "engine": "claude-code", "prompt": ""}
    await db.execute(
        lifecycle.INSERT_JOB,
        *(job_id, "q", "claude-code", "default", request, 0, max_attempts, "default", None),
    )
    return job_id


async def claim_one(db: Any, owner: str = "owner") -> ClaimedJob:
    (job,) = await queries.claim(db, owner, LEASE, 1)
    return job


async def expire(db: Any, job_id: str) -> None:
    await db.execute(
        "UPDATE jobs SET lease_until = now() - interval '1 second' WHERE job_id = $1", job_id
    )


async def events_of(db: Any, job_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT seq, kind, data FROM job_events WHERE job_id = $1 ORDER BY seq", job_id
    )
    return [dict(row) for row in rows]


def statuses(events: list[dict[str, Any]]) -> list[str]:
    return [event["data"]["status"] for event in events if event["kind"] == "state"]


async def test_submit_claim_finish_write_numbered_state_events(db: Any) -> None:
    job_id = await submit(db)
    job = await claim_one(db)
    done = queries.Finish("completed", 0, "ok", None, None, None, 5)
    assert await queries.finish(db, job_id, job.lease_token, done)
    assert not await queries.finish(db, job_id, job.lease_token, done)  # fenced: no event

    events = await events_of(db, job_id)
    assert [event["seq"] for event in events] == [1, 2, 3]
    assert statuses(events) == ["pending", "running", "completed"]
    assert events[1]["data"] | {"attempt": 1} == events[1]["data"]
    assert events[2]["data"]["exit_code"] == 0
    assert await db.fetchval("SELECT event_seq FROM jobs WHERE job_id = $1", job_id) == 3


async def test_the_reaper_writes_requeue_then_tower_lost(db: Any) -> None:
    job_id = await submit(db, max_attempts=2)
    for _ in range(2):
        await claim_one(db, "dead-owner")
        await expire(db, job_id)
        await queries.reap(db)

    events = await events_of(db, job_id)
    assert statuses(events) == ["pending", "running", "pending", "running", "failed"]
    assert [event["data"]["attempt"] for event in events] == [0, 1, 1, 2, 2]
    assert events[-1]["data"]["failure_reason"] == "tower_lost"


async def test_a_clean_stop_and_a_cancel_write_their_events(db: Any) -> None:
    handed_back = await submit(db, max_attempts=2)
    job = await claim_one(db)
    assert await queries.release(db, handed_back, job.lease_token) == "pending"
    cancelled = await submit(db)
    assert await db.fetchval(lifecycle.CANCEL_JOB, cancelled, None) == cancelled
    assert await db.fetchval(lifecycle.CANCEL_JOB, cancelled, None) is None

    assert statuses(await events_of(db, handed_back)) == ["pending", "running", "pending"]
    assert statuses(await events_of(db, cancelled)) == ["pending", "cancelled"]


async def test_the_owner_log_is_stored_in_order_and_fenced(db: Any, pool: Pool) -> None:
    job_id = await submit(db)
    job = await claim_one(db)
    log = JobLog(pool, job, max_bytes=1 << 20, close_deadline=5)
    for n in range(5):
        log.write("stdout", f"out {n}\n".encode())
        log.write("stderr", f"err {n}\n".encode())
    log.write("stdout", "caf\u00e9 ".encode()[:-2])  # a UTF-8 sequence split in two writes
    log.write("stdout", "\u00e9 ".encode()[1:] + b"nul:\x00\n")
    await log.close()
    await db.execute(lifecycle.CANCEL_JOB, job_id, None)
    late = JobLog(pool, job, max_bytes=1 << 20, close_deadline=5)
    late.write("stdout", b"after the cancel\n")
    await late.close()

    events = await events_of(db, job_id)
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert statuses(events) == ["pending", "running", "cancelled"]
    logs = [event["data"] for event in events if event["kind"] == "log"]
    text = {
        name: "".join(d["text"] for d in logs if d["stream"] == name)
        for name in ("stdout", "stderr")
    }
    assert text["stdout"] == "".join(f"out {n}\n" for n in range(5)) + "caf\u00e9 nul:\ufffd\n"
    assert text["stderr"] == "".join(f"err {n}\n" for n in range(5))


async def test_a_log_over_its_limit_is_cut_with_a_note(db: Any, pool: Pool) -> None:
    job_id = await submit(db)
    job = await claim_one(db)
    log = JobLog(pool, job, max_bytes=1024, close_deadline=5)
    for _ in range(30):
        log.write("stdout", b"x" * 99 + b"\n")
    await log.close()

    logs = [e["data"] for e in await events_of(db, job_id) if e["kind"] == "log"]
    stdout = "".join(d["text"] for d in logs if d["stream"] == "stdout")
    assert len(stdout) == 1024
    assert [d["text"] for d in logs if d["stream"] == "stderr"] == [
        "\n[parpaing: log truncated: the job wrote more than 1024 bytes of output]\n"
    ]


async def test_an_id_committed_late_is_not_skipped(db: Any, database_url: str) -> None:
    """The all-jobs cursor against real snapshots: an event whose transaction is still
    open holds back the ids after it, and comes out first once it commits."""
    slow = await asyncpg.connect(database_url)
    try:
        transaction = slow.transaction()
        await transaction.start()
        await slow.execute(
            lifecycle.INSERT_JOB, "q-00000000000a", "q", "e", "p", "{}", 0, 1, "default", None
        )  # takes the smaller id, commits last
        await submit(db)
        cursor = StateCursor(0)
        for _ in range(2):
            assert await read_state_events(db, cursor) == [], (
                "an id was delivered while a smaller one could still commit"
            )
        await transaction.commit()
        seen = await read_state_events(db, cursor)
        seen += await read_state_events(db, cursor)
    finally:
        await slow.close()
    ids = [row["id"] for row in await db.fetch("SELECT id FROM job_events ORDER BY id")]
    assert seen == ids and len(ids) == 2


async def read_state_events(db: Any, cursor: StateCursor) -> list[int]:
    """One read as the stream does it (then its marker, if it needs one)."""
    start = cursor.after
    rows = await db.fetch(event_queries.SELECT_STATE_EVENTS, start, 500)
    ids = [row["id"] for row in rows if row["id"] is not None]
    bound = cursor.advance(rows[0]["oldest_running"], ids, full_page=False)
    if cursor.needs_marker:
        cursor.mark(await db.fetchval(event_queries.TAKE_MARKER))
    return [id_ for id_ in ids if start < id_ <= bound]


async def test_all_jobs_stream_resumes_exactly_once_across_concurrent_writers(
    pool: Pool, hub: NotifyHub, database_url: str
) -> None:
    writers, jobs_each = 6, 15
    total = writers * jobs_each * 2  # each job: pending, then cancelled
    received: list[int] = []
    writing = asyncio.create_task(write_concurrently(database_url, writers, jobs_each))
    async with asyncio.timeout(DEADLINE):
        while len(received) < total:
            after = received[-1] if received else 0
            stream = service.state_events(pool, hub, after, keepalive=60, sees=None)
            try:
                async for text in stream:
                    received.append(_event_id(text))
                    if len(received) % 7 == 0 or len(received) == total:
                        break  # drop and resume, as a client does
            finally:
                await stream.aclose()
        await writing
    expected = await pool.fetch("SELECT id FROM job_events WHERE kind = 'state' ORDER BY id")
    assert received == [row["id"] for row in expected]
    assert len(received) == total


async def write_concurrently(database_url: str, writers: int, jobs_each: int) -> None:
    """Each writer submits in a transaction held open a random moment (so ids commit out
    of order), then cancels the job."""

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        connection = await asyncpg.connect(database_url)
        await connection.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        try:
            for _ in range(jobs_each):
                async with connection.transaction():
                    job_id = await submit(connection)
                    await asyncio.sleep(rng.random() * 0.02)
                async with connection.transaction():  # as the jobs API cancels
                    await connection.execute(lifecycle.CANCEL_JOB, job_id, None)
                    await connection.execute(lifecycle.NOTIFY_CANCELLED, job_id)
        finally:
            await connection.close()

    await asyncio.gather(*(writer(seed) for seed in range(writers)))


def _event_id(text: str) -> int:
    first = text.splitlines()[0]
    assert first.startswith("id: "), text
    return int(first.removeprefix("id: "))


async def test_claims_and_log_writes_wake_the_streams_of_their_jobs(
    db: Any, pool: Pool, hub: NotifyHub
) -> None:
    # Inserted without a NOTIFY, so no hint can come from the submits.
    jobs = [new_job_id("q") for _ in range(70)]  # more than one NOTIFY's worth of ids
    await db.executemany(
        "INSERT INTO jobs (job_id, agent_id, engine, profile, request) "
        "VALUES ($1, 'q', 'e', 'p', '{}')",
        [(job_id,) for job_id in jobs],
    )
    with contextlib.ExitStack() as stack:
        hints = {job_id: stack.enter_context(hub.job_events(job_id)) for job_id in jobs}
        everything = stack.enter_context(hub.state_events())
        claimed = await queries.claim(db, "owner", LEASE, len(jobs))
        async with asyncio.timeout(DEADLINE):
            await asyncio.gather(*(hint.wait() for hint in hints.values()))
            await everything.wait()
        for hint in hints.values():
            hint.clear()
        log = JobLog(pool, claimed[0], max_bytes=1024, close_deadline=5)
        log.write("stdout", b"hi\n")
        await log.close()
        async with asyncio.timeout(DEADLINE):
            await hints[claimed[0].job_id].wait()
    assert len(claimed) == len(jobs)
