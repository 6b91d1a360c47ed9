"""The elastic warm pool (docs/execution.md, "An elastic pool"), with real containers:
it grows to the jobs queued and running, never past POOL_MAX, keeps what it grew while
demand may come back, and returns to POOL_MIN once demand has stayed low for
POOL_IDLE_SECONDS. Two replicas on one database share it, and run each job once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import docker
import httpx
import pytest

from tests.e2e.support import docker_settings, isolated_network, poll_until, serve, submit
from tests.e2e.test_dry_runs import acquisitions

DRY_RUN = {"engine": "claude-code", "profile": "default", "dry_run": True}
WARM = "SELECT count(*) FROM pool_slots WHERE status IN ('ready', 'starting')"
# A job run more than once would have a second 'running' state event (or attempt 2).
RUNS_PER_JOB = """
SELECT j.job_id, j.status, j.attempt,
       (SELECT count(*) FROM job_events e
        WHERE e.job_id = j.job_id AND e.kind = 'state' AND e.data ->> 'status' = 'running') AS runs
FROM jobs j WHERE j.job_id = ANY($1::text[])
"""
FLOOR = 1
CEILING = 8
IDLE = 20  # POOL_IDLE_SECONDS: longer than a loaded CI host needs to grow the pool


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


def elastic(database_url: str, network: str, **overrides: Any) -> Any:
    return docker_settings(
        database_url,
        network,
        **{
            "pool_min": FLOOR,
            "pool_max": CEILING,
            "pool_idle_seconds": IDLE,
            "max_concurrent_jobs": 3,
            "worker_mem_limit": "256m",
            "worker_cpu_limit": 0.5,
            **overrides,
        },
    )


class PoolWatch:
    """The most warm workers (ready or starting) the database ever held while watched:
    read continuously, on its own connection."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection
        self.most = 0
        self.now = 0

    async def watch(self) -> None:
        while True:
            self.now = int(await self._connection.fetchval(WARM))
            self.most = max(self.most, self.now)
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def watching(database_url: str) -> AsyncIterator[PoolWatch]:
    connection = await asyncpg.connect(database_url)
    watch = PoolWatch(connection)
    task = asyncio.create_task(watch.watch())
    try:
        yield watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await connection.close()


async def warm_count(watch: PoolWatch, wanted: int, what: str, deadline: float = 120) -> int:
    async def reached() -> int | None:
        return watch.now if watch.now == wanted else None

    return await poll_until(reached, what, deadline)


async def submit_all(client: httpx.AsyncClient, jobs: int) -> list[str]:
    return list(await asyncio.gather(*(submit(client, "burst", **DRY_RUN) for _ in range(jobs))))


async def all_finished(client: httpx.AsyncClient, ids: list[str]) -> None:
    for job_id in ids:
        response = await client.get(f"/jobs/{job_id}/wait", params={"timeout": 300}, timeout=330)
        assert response.json()["status"] == "completed", response.json()


async def test_the_pool_grows_with_a_burst_keeps_it_then_returns_to_its_floor(
    database_url: str, network: str, worker_image: str
) -> None:
    settings = elastic(database_url, network)
    async with (
        watching(database_url) as watch,
        serve(settings) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as client,
    ):
        await warm_count(watch, FLOOR, "the pool at its floor")
        ids = await submit_all(client, 12)
        await all_finished(client, ids)
        # The burst asked for 12: the pool grows to its ceiling and stays there while
        # demand may come back, though nothing runs any more.
        await warm_count(watch, CEILING, "the pool grown to its ceiling")
        taken = await acquisitions(client)
        await warm_count(watch, FLOOR, "the pool back at its floor", deadline=IDLE + 60)
    assert watch.most == CEILING
    assert taken["warm"] >= 1, taken  # the floor's worker served the first job


async def test_two_hundred_jobs_on_two_replicas_run_once_within_pool_max(
    database_url: str, network: str, worker_image: str
) -> None:
    settings = elastic(database_url, network)
    async with (
        watching(database_url) as watch,
        serve(settings) as first,
        serve(settings) as second,
        httpx.AsyncClient(base_url=first, timeout=60) as a,
        httpx.AsyncClient(base_url=second, timeout=60) as b,
    ):
        ids = [*await submit_all(a, 100), *await submit_all(b, 100)]
        await all_finished(a, ids)
        runs = await runs_per_job(database_url, ids)
        taken = [await acquisitions(a), await acquisitions(b)]
        await warm_count(watch, FLOOR, "the pool back at its floor", deadline=IDLE + 60)
    assert len(runs) == 200
    assert {(r["status"], r["attempt"], r["runs"]) for r in runs} == {("completed", 1, 1)}
    assert sum(sum(t.values()) for t in taken) == 200, taken  # one container per job
    assert all(sum(t.values()) > 0 for t in taken), taken  # both replicas ran jobs
    assert watch.most <= CEILING


async def runs_per_job(database_url: str, ids: list[str]) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(database_url)
    try:
        return [dict(row) for row in await connection.fetch(RUNS_PER_JOB, ids)]
    finally:
        await connection.close()


async def test_the_pool_keeps_the_default_profiles_shape(
    database_url: str, network: str, worker_image: str
) -> None:
    """The shipped default profile asks 2g and 2 CPUs; WORKER_MEM_LIMIT and
    WORKER_CPU_LIMIT say otherwise here. Jobs naming no profile still run warm."""
    settings = elastic(database_url, network, pool_min=1, pool_max=1)
    async with serve(settings) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        await poll_until(lambda: _ready(database_url), "a warm worker")
        ids = [await submit(client, "warm", **DRY_RUN)]
        await all_finished(client, ids)
        taken = await acquisitions(client)
    assert taken == {"warm": 1, "cold": 0}, taken


async def _ready(database_url: str) -> bool:
    connection = await asyncpg.connect(database_url)
    try:
        return bool(await connection.fetchval(WARM.replace("'starting'", "'ready'")))
    finally:
        await connection.close()
