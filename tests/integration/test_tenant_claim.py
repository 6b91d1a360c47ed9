"""The claim among tenants, on real PostgreSQL: fair by running jobs per share, priority
within a tenant, a running quota never passed, even by a claim that started before
another's commit."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from tower.db import lifecycle
from tower.db.pool import Pool, create_pool
from tower.execution.runner import ClaimedJob
from tower.queue import queries

LEASE = 30.0


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    pool = await create_pool(database_url, 20)
    yield pool
    await pool.close()


@pytest.fixture
async def db(pool: Pool) -> AsyncIterator[Any]:
    async with pool.acquire() as connection:
        yield connection


async def tenant(db: Any, name: str, **quotas: Any) -> None:
    columns = ["name", *quotas]
    values = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
    await db.execute(
        f"INSERT INTO tenants ({', '.join(columns)}) VALUES ({values})", name, *quotas.values()
    )


async def submit(db: Any, owner: str, count: int = 1, priority: int = 0) -> list[str]:
    """`count` jobs of tenant `owner`, inserted as the jobs API does, oldest first."""
    ids = []
    for _ in range(count):
        job_id = f"{owner}-{uuid.uuid4().hex[:12]}"
        row = (job_id, owner, "claude-code", "default", {"prompt": ""}, priority, 1, owner, "k")
        await db.execute(lifecycle.INSERT_JOB, *row)
        ids.append(job_id)
    return ids


async def claim(db: Any, limit: int, defaults: tuple[int, float] = (0, 1.0)) -> list[ClaimedJob]:
    return await queries.claim(db, "owner", LEASE, limit, defaults)


@asynccontextmanager
async def held_row(database_url: str, name: str) -> AsyncIterator[None]:
    """The tenant's row locked by another connection, as another claim holds it."""
    other = await asyncpg.connect(database_url)
    try:
        async with other.transaction():
            await other.execute("SELECT 1 FROM tenants WHERE name = $1 FOR NO KEY UPDATE", name)
            yield
    finally:
        await other.close()


def tenants_of(jobs: list[ClaimedJob]) -> list[str]:
    return [job.agent_id for job in jobs]  # each test's agent id is its tenant


async def finish(db: Any, job: ClaimedJob) -> None:
    outcome = queries.Finish("completed", 0, "", None, None, None, 1)
    assert await queries.finish(db, job.job_id, job.lease_token, outcome)


async def test_a_flood_waits_behind_another_tenants_first_jobs(db: Any) -> None:
    await tenant(db, "flood")
    await tenant(db, "late")
    await submit(db, "flood", 300)
    assert Counter(tenants_of(await claim(db, 8))) == {"flood": 8}
    late = await submit(db, "late", 5)
    # Late has none running, flood 8: late's five go first, then flood's next.
    claimed = await claim(db, 8)
    assert set(late) <= {job.job_id for job in claimed}
    assert Counter(tenants_of(claimed)) == {"late": 5, "flood": 3}


async def test_shares_weigh_the_running_jobs(db: Any) -> None:
    await tenant(db, "heavy", share=2.0)
    await tenant(db, "light")
    await submit(db, "heavy", 20)
    await submit(db, "light", 20)
    assert Counter(tenants_of(await claim(db, 9))) == {"heavy": 6, "light": 3}
    # Running 6 and 3: equal per share, so the next ones alternate by share again.
    assert Counter(tenants_of(await claim(db, 3))) == {"heavy": 2, "light": 1}


async def test_the_default_share_is_the_settings(db: Any) -> None:
    await tenant(db, "set", share=1.0)
    await tenant(db, "unset")  # TENANT_SHARE applies: 3 here
    await submit(db, "set", 10)
    await submit(db, "unset", 10)
    assert Counter(tenants_of(await claim(db, 8, (0, 3.0)))) == {"unset": 6, "set": 2}


async def test_priority_orders_a_tenants_own_jobs(db: Any) -> None:
    await tenant(db, "prio")
    low = await submit(db, "prio", 2)
    high = await submit(db, "prio", 1, priority=5)
    middle = await submit(db, "prio", 1, priority=3)
    order = [(await claim(db, 1))[0].job_id for _ in range(4)]
    assert order == [*high, *middle, *low]


async def test_a_running_quota_is_never_passed(db: Any) -> None:
    await tenant(db, "capped", max_running=3)
    await tenant(db, "free")
    await submit(db, "capped", 10)
    await submit(db, "free", 10)
    first = await claim(db, 16)
    assert Counter(tenants_of(first)) == {"capped": 3, "free": 10}
    assert await claim(db, 16) == []
    await finish(db, next(job for job in first if job.agent_id == "capped"))
    assert tenants_of(await claim(db, 16)) == ["capped"]
    assert await claim(db, 16) == []


async def test_the_default_running_quota_is_the_settings(db: Any) -> None:
    await tenant(db, "unset")
    await tenant(db, "unlimited", max_running=0)
    await submit(db, "unset", 5)
    await submit(db, "unlimited", 5)
    claimed = await claim(db, 16, (2, 1.0))
    assert Counter(tenants_of(claimed)) == {"unset": 2, "unlimited": 5}


async def test_a_claim_that_began_before_anothers_commit_counts_its_jobs(
    db: Any, database_url: str
) -> None:
    """The running count of this statement's snapshot misses jobs started by a claim that
    committed after it; the figure that claim left on the tenant's row counts then. Here
    that claim is a transaction still open (so surely not in the snapshot) whose row says
    3 are running: nothing more starts, although none is, in the snapshot."""
    await tenant(db, "capped", max_running=3)
    await submit(db, "capped", 5)
    other = await asyncpg.connect(database_url)
    try:
        transaction = other.transaction()
        await transaction.start()
        xact = await other.fetchval("SELECT pg_current_xact_id()::text::bigint")
        await db.execute(
            "UPDATE tenants SET claimed_xact = $1, claimed_running = 3 WHERE name = 'capped'",
            xact,
        )
        assert await claim(db, 16) == []
        await transaction.commit()
    finally:
        await other.close()
    # Its transaction is in the next snapshot: the jobs running there count (none).
    assert len(await claim(db, 16)) == 3


async def test_a_tenant_another_claim_holds_is_skipped_this_time(
    db: Any, database_url: str
) -> None:
    await tenant(db, "capped", max_running=3)
    await tenant(db, "free")
    await submit(db, "capped", 3)
    await submit(db, "free", 3)
    async with held_row(database_url, "capped"):
        assert Counter(tenants_of(await claim(db, 16))) == {"free": 3}
    assert Counter(tenants_of(await claim(db, 16))) == {"capped": 3}


async def test_concurrent_claims_never_pass_a_quota(pool: Pool) -> None:
    async with pool.acquire() as db:
        await tenant(db, "capped", max_running=5)
        await submit(db, "capped", 200)

    async def claimer() -> list[ClaimedJob]:
        async with pool.acquire() as connection:
            return await claim(connection, 2)

    claimed = [
        job for jobs in await asyncio.gather(*(claimer() for _ in range(16))) for job in jobs
    ]
    # A claim that finds the tenant's row locked by another skips the tenant this time, so
    # the burst may leave room (the dispatcher claims again); it never oversteps.
    assert len(claimed) <= 5
    async with pool.acquire() as db:
        claimed += await claim(db, 16)
        running = await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'running'")
    assert len(claimed) == running == 5


async def test_a_claim_says_when_a_running_quota_holds_jobs_back(db: Any) -> None:
    await tenant(db, "capped", max_running=1)
    await tenant(db, "free")
    await submit(db, "free", 2)
    claimed = await queries.claim_jobs(db, "owner", LEASE, 16)
    assert (len(claimed.jobs), claimed.held_back) == (2, False)
    await submit(db, "capped", 2)
    claimed = await queries.claim_jobs(db, "owner", LEASE, 16)
    assert (len(claimed.jobs), claimed.held_back) == (1, True)
    nothing = await queries.claim_jobs(db, "owner", LEASE, 16)
    assert (nothing.jobs, nothing.held_back) == ([], True)  # one waits for the running one


async def test_a_claim_says_when_it_passed_over_a_tenant_another_claim_held(
    db: Any, database_url: str
) -> None:
    await tenant(db, "capped", max_running=3)
    await tenant(db, "free")
    await submit(db, "capped", 2)
    await submit(db, "free", 1)
    async with held_row(database_url, "capped"):
        passed_over = await queries.claim_jobs(db, "owner", LEASE, 16)
    assert (tenants_of(passed_over.jobs), passed_over.contended) == (["free"], True)
    # Held by nobody now: taken, and nothing is left contended.
    claimed = await queries.claim_jobs(db, "owner", LEASE, 16)
    assert (tenants_of(claimed.jobs), claimed.contended) == (["capped", "capped"], False)
    # A tenant without a running quota is never locked, so never contended.
    await submit(db, "free", 1)
    assert (await queries.claim_jobs(db, "owner", LEASE, 16)).contended is False
