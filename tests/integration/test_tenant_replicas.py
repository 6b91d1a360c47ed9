"""Tenants across two tower replicas (real processes on one database): a key revoked on
one is refused by the other within a second; a running quota is never passed; one
tenant's flood does not starve another; the rate limit admits exactly its number."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support.towers import TowerProcess, cancel_job, start_tower

pytestmark = pytest.mark.slow

ADMIN_KEY = "tenant-replicas-bootstrap"
REVOKE_BOUND = 1.0  # seconds: the bound, not an expectation of speed


@pytest.fixture
async def towers(database_url: str, tmp_path: Path) -> AsyncIterator[list[TowerProcess]]:
    async with AsyncExitStack() as stack:
        started = []
        for name in ("tower-a", "tower-b"):
            tower = await start_tower(database_url, tmp_path, name, tower_api_key=ADMIN_KEY)
            stack.callback(tower.terminate)
            started.append(tower)
        yield started


def client(tower: TowerProcess, key: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.AsyncClient(base_url=tower.base_url, headers=headers, timeout=10)


async def test_a_revoked_key_is_refused_by_the_other_replica_within_a_second(
    towers: list[TowerProcess],
) -> None:
    a, b = towers
    async with client(a, ADMIN_KEY) as admin:
        made = (
            await admin.post("/keys", json={"tenant": "acme", "role": "read", "name": "reader"})
        ).json()
        async with client(b, made["key"]) as reader:
            # B knows the key now (and keeps it in its cache).
            assert (await reader.get("/jobs")).status_code == 200
            assert (await reader.get("/jobs")).status_code == 200
            assert (await admin.delete(f"/keys/{made['id']}")).status_code == 204
            revoked = time.monotonic()
            while (status := (await reader.get("/jobs")).status_code) == 200:
                assert time.monotonic() - revoked < REVOKE_BOUND, "B still takes the key"
            elapsed = time.monotonic() - revoked
    assert status == 401
    assert elapsed < REVOKE_BOUND


# --- quotas and fair scheduling across replicas ----------------------------------------------

SPREAD = 16  # concurrent submits
TERMINAL = ("completed", "failed", "cancelled")
DEADLINE = 120.0  # a bound on waiting for the towers to settle, not an expectation of speed


async def tenant_key(admin: httpx.AsyncClient, tenant: str, **quotas: int) -> str:
    if quotas:
        assert (await admin.put(f"/tenants/{tenant}", json=quotas)).status_code == 200
    body = {"tenant": tenant, "role": "submit", "name": f"{tenant}-bot"}
    made = await admin.post("/keys", json=body)
    assert made.status_code == 201, made.text
    key: str = made.json()["key"]
    return key


async def submit_many(
    towers: list[TowerProcess], key: str, prompt: str, count: int
) -> list[httpx.Response]:
    """`count` submits spread over the towers, SPREAD at a time."""
    gate = asyncio.Semaphore(SPREAD)
    clients = [client(tower, key) for tower in towers]

    async def one(n: int) -> httpx.Response:
        async with gate:
            body = {"agent_id": "t", "engine": "claude-code", "prompt": prompt}
            return await clients[n % len(clients)].post("/jobs", json=body)

    try:
        return list(await asyncio.gather(*(one(n) for n in range(count))))
    finally:
        for each in clients:
            await each.aclose()


async def until(check: Callable[[], Awaitable[bool]], deadline: float = DEADLINE) -> None:
    """Poll the database until `check()` holds: there is no event across processes."""
    async with asyncio.timeout(deadline):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def busy_towers(database_url: str, tmp_path: Path) -> AsyncIterator[list[TowerProcess]]:
    settings: dict[str, float | str] = {
        "tower_api_key": ADMIN_KEY,
        "max_concurrent_jobs": 8,
        "poll_interval": 1,
        "lease_seconds": 10,
    }
    async with AsyncExitStack() as stack:
        started = []
        for name in ("tower-a", "tower-b"):
            tower = await start_tower(database_url, tmp_path, name, **settings)
            stack.callback(tower.terminate)
            started.append(tower)
        yield started


async def test_a_running_quota_is_never_passed_across_replicas(
    busy_towers: list[TowerProcess], db: asyncpg.Connection, database_url: str
) -> None:
    async with client(busy_towers[0], ADMIN_KEY) as admin:
        key = await tenant_key(admin, "capped", max_running=3)
    seen: list[int] = []
    stop = asyncio.Event()

    async def watch() -> None:
        """Count the tenant's running jobs, again and again, until told to stop."""
        watcher = await asyncpg.connect(database_url)
        try:
            while not stop.is_set():
                seen.append(await watcher.fetchval(RUNNING, "capped"))
                await asyncio.sleep(0)
        finally:
            await watcher.close()

    watching = asyncio.create_task(watch())
    answers = await submit_many(busy_towers, key, "sleep 0.05\nprint done", 100)
    assert [answer.status_code for answer in answers] == [202] * 100

    async def all_done() -> bool:
        return await db.fetchval(UNFINISHED, "capped") == 0

    await until(all_done)
    stop.set()
    await watching

    assert max(seen) == 3, f"at most 3 and reached: {max(seen)}"
    rows = await db.fetch(RUNS, "capped")
    assert {row["status"] for row in rows} == {"completed"} and len(rows) == 100
    assert {row["ran_by"] for row in rows} == {"tower-a", "tower-b"}
    assert most_at_once(await db.fetch(SPANS, "capped")) <= 3


RUNNING = "SELECT count(*) FROM jobs WHERE tenant = $1 AND status = 'running'"
UNFINISHED = "SELECT count(*) FROM jobs WHERE tenant = $1 AND status IN ('pending', 'running')"
RUNS = "SELECT status, ran_by FROM jobs WHERE tenant = $1"
# Each run's start and end as the ids of its 'running' and final state events. A claim
# starts jobs in place of runs whose end it saw (committed before its snapshot, so their
# events' ids are smaller than its own): with these ids, runs that overlapped for the
# claim overlap here too. (Timestamps would not do: now() is a transaction's start, which
# comes before its snapshot.)
SPANS = """
SELECT min(e.id) FILTER (WHERE e.data ->> 'status' = 'running') AS started,
       max(e.id) AS ended
FROM job_events AS e JOIN jobs AS j USING (job_id)
WHERE j.tenant = $1 AND e.kind = 'state'
GROUP BY e.job_id
"""


def most_at_once(spans: list[asyncpg.Record]) -> int:
    """The most runs between their start and their end at any one point."""
    edges = sorted([(row["started"], 1) for row in spans] + [(row["ended"], -1) for row in spans])
    most = at_once = 0
    for _, step in edges:
        at_once += step
        most = max(most, at_once)
    return most


# The state events in commit order: when each of a tenant's jobs started.
STARTS = """
SELECT e.id, e.job_id, j.tenant FROM job_events AS e JOIN jobs AS j USING (job_id)
WHERE e.kind = 'state' AND e.data ->> 'status' = 'running' AND e.id > $1
ORDER BY e.id
"""
NEWEST_EVENT = "SELECT coalesce(max(id), 0) FROM job_events"


async def test_a_flood_does_not_starve_another_tenant(
    busy_towers: list[TowerProcess], db: asyncpg.Connection
) -> None:
    async with client(busy_towers[0], ADMIN_KEY) as admin:
        flood = await tenant_key(admin, "flood")
        late = await tenant_key(admin, "late")
    answers = await submit_many(busy_towers, flood, "sleep 0.5", 300)
    assert [answer.status_code for answer in answers] == [202] * 300
    before = await db.fetchval(NEWEST_EVENT)
    queued = await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'pending'")
    assert queued > 100, "the flood must still be queued when the other tenant submits"
    answers = await submit_many(busy_towers, late, "print late", 5)
    late_jobs = {answer.json()["job_id"] for answer in answers}

    async def both_started() -> bool:
        starts = await db.fetch(STARTS, before)
        flood_after = [row for row in starts if row["tenant"] == "flood"]
        return late_jobs <= {row["job_id"] for row in starts} and len(flood_after) >= 20

    await until(both_started)
    starts = await db.fetch(STARTS, before)
    twentieth = [row["id"] for row in starts if row["tenant"] == "flood"][19]
    late_starts = [row["id"] for row in starts if row["job_id"] in late_jobs]
    assert max(late_starts) < twentieth, (late_starts, twentieth)
    for job_id in await db.fetch("SELECT job_id FROM jobs WHERE status = 'pending'"):
        await cancel_job(db, job_id["job_id"])


async def test_the_rate_limit_admits_exactly_n_under_concurrent_submits(
    busy_towers: list[TowerProcess], db: asyncpg.Connection
) -> None:
    limit = 10
    async with client(busy_towers[0], ADMIN_KEY) as admin:
        key = await tenant_key(admin, "rated", submits_per_minute=limit)
    # All of them in one minute's window: start early enough in a minute.
    left = 60 - datetime.now(UTC).second
    if left < 20:
        await asyncio.sleep(left)
    clients = [client(tower, key) for tower in busy_towers]
    body = {"agent_id": "t", "engine": "claude-code", "prompt": "print x"}
    try:
        answers = await asyncio.gather(
            *(clients[n % 2].post("/jobs", json=body) for n in range(200))
        )
    finally:
        for each in clients:
            await each.aclose()
    assert Counter(answer.status_code for answer in answers) == {202: limit, 429: 200 - limit}
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert "submits_per_minute is 10" in refused.json()["detail"]
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE tenant = 'rated'") == limit
