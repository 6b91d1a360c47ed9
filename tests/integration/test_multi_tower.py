"""Several towers as real processes on one database: no job lost, none run twice,
a dead replica's jobs recovered, and a PostgreSQL restart survived."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.towers import TowerProcess, read_run_log, start_tower
from tower.db.embedded import LocalPostgres
from tower.queue import queries

pytestmark = pytest.mark.slow

DEADLINE = 60.0  # a bound on waiting for the system to settle, not an expectation of speed
TERMINAL = ("completed", "failed", "cancelled")


@asynccontextmanager
async def _towers(
    database_url: str, workdir: Path, names: list[str], **settings: Any
) -> AsyncIterator[list[TowerProcess]]:
    async with AsyncExitStack() as stack:
        towers = []
        for name in names:
            tower = await start_tower(database_url, workdir, name, **settings)
            stack.callback(_stop, tower)
            towers.append(tower)
        yield towers


def _stop(tower: TowerProcess) -> None:
    if tower.process.poll() is None:
        tower.terminate()


async def _submit(base_url: str, prompt: str, max_attempts: int = 1) -> str:
    body = {"agent_id": "a", "engine": "claude-code", "prompt": prompt}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        response = await client.post("/jobs", json=body | {"max_attempts": max_attempts})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def _submit_many(towers: list[TowerProcess], prompt: str, count: int) -> list[str]:
    gate = asyncio.Semaphore(16)

    async def one(n: int) -> str:
        async with gate:
            return await _submit(towers[n % len(towers)].base_url, prompt)

    return await asyncio.gather(*(one(n) for n in range(count)))


async def _statuses(database_url: str, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT * FROM jobs WHERE job_id = ANY($1)", job_ids)
    finally:
        await connection.close()
    return {row["job_id"]: dict(row) for row in rows}


async def _until(check: Any, deadline: float = DEADLINE) -> None:
    """Poll the database until `check()` holds; there is no event across processes."""
    async with asyncio.timeout(deadline):
        while True:
            if await check():
                return
            await asyncio.sleep(0.1)


async def test_two_towers_run_every_job_exactly_once(database_url: str, tmp_path: Path) -> None:
    run_log = tmp_path / "runs.log"
    settings = {"lease_seconds": 10, "poll_interval": 0.5, "max_concurrent_jobs": 8}
    async with _towers(
        database_url, tmp_path, ["tower-a", "tower-b"], simulated_run_log=run_log, **settings
    ) as towers:
        job_ids = await _submit_many(towers, "sleep 0.01\nprint done", 500)

        async def all_finished() -> bool:
            rows = await _statuses(database_url, job_ids)
            return all(row["status"] in TERMINAL for row in rows.values())

        await _until(all_finished)
        pids = {tower.pid for tower in towers}

    rows = await _statuses(database_url, job_ids)
    assert len(rows) == 500
    assert {(row["status"], row["attempt"], row["result"]) for row in rows.values()} == {
        ("completed", 1, "done")
    }
    runs = read_run_log(run_log)
    assert Counter(job_id for job_id, _, _ in runs) == Counter(job_ids)
    assert {pid for _, _, pid in runs} == pids


async def test_a_killed_replica_loses_no_job(database_url: str, tmp_path: Path) -> None:
    lease = 2.0
    run_log = tmp_path / "runs.log"
    settings = {"lease_seconds": lease, "poll_interval": 0.2, "simulated_run_log": run_log}
    async with _towers(database_url, tmp_path, ["tower-a"], **settings) as (doomed,):
        retried = [await _submit(doomed.base_url, "sleep 30", max_attempts=2) for _ in range(2)]
        last_try = [await _submit(doomed.base_url, "sleep 30", max_attempts=1) for _ in range(2)]
        jobs = retried + last_try

        async def all_running_on_a() -> bool:
            rows = (await _statuses(database_url, jobs)).values()
            return all(row["lease_owner"] == "tower-a" for row in rows)

        await _until(all_running_on_a)
        async with _towers(database_url, tmp_path, ["tower-b"], **settings) as (survivor,):
            old_tokens = {
                job_id: row["lease_token"]
                for job_id, row in (await _statuses(database_url, jobs)).items()
            }
            doomed.kill()

            async def recovered() -> bool:
                rows = await _statuses(database_url, jobs)
                return all(
                    (rows[job_id]["lease_owner"], rows[job_id]["attempt"]) == ("tower-b", 2)
                    for job_id in retried
                ) and all(
                    (rows[job_id]["status"], rows[job_id]["failure_reason"])
                    == ("failed", "tower_lost")
                    for job_id in last_try
                )

            # Two lease periods, plus a second for process scheduling on a busy machine.
            await _until(recovered, deadline=2 * lease + 1)
            await _assert_late_writes_change_nothing(database_url, old_tokens)
            survivor_pid = survivor.pid

    runs = sorted(read_run_log(run_log))
    assert sorted((job_id, 1, doomed.pid) for job_id in jobs) == [
        run for run in runs if run[1] == 1
    ]
    assert sorted((job_id, 2, survivor_pid) for job_id in retried) == [
        run for run in runs if run[1] == 2
    ]


async def _assert_late_writes_change_nothing(database_url: str, tokens: dict[str, Any]) -> None:
    late = queries.Finish("completed", 0, "from the grave", None, None, None, 1)
    before = await _statuses(database_url, list(tokens))
    connection = await asyncpg.connect(database_url)
    try:
        for job_id, token in tokens.items():
            assert not await queries.finish(connection, job_id, token, late)
            assert await queries.release(connection, job_id, token) is None
        assert await queries.heartbeat(connection, list(tokens.values()), 60) == set()
    finally:
        await connection.close()
    after = await _statuses(database_url, list(tokens))
    # The survivor's heartbeat may move its own lease on; nothing else may change.
    for row in (*before.values(), *after.values()):
        row.pop("lease_until")
    assert after == before


async def test_towers_survive_a_postgres_restart(
    database_url: str, tmp_path: Path, pg_server: LocalPostgres
) -> None:
    settings = {"lease_seconds": 10, "poll_interval": 0.5, "max_concurrent_jobs": 4}
    async with _towers(database_url, tmp_path, ["tower-a", "tower-b"], **settings) as towers:
        before = await _submit_many(towers, "sleep 0.3\nprint before", 16)

        async def some_running() -> bool:
            rows = (await _statuses(database_url, before)).values()
            return any(row["status"] == "running" for row in rows)

        await _until(some_running)
        await asyncio.to_thread(pg_server.restart)
        after = await _submit_many(towers, "print after", 16)

        records = await asyncio.gather(
            *(_wait(towers[n % 2], job_id) for n, job_id in enumerate(before + after))
        )

    failed = [record for record in records if record["status"] != "completed"]
    assert failed == [], "\n".join(tower.log()[-4000:] for tower in towers)
    assert [record["result"] for record in records] == ["before"] * 16 + ["after"] * 16


async def _wait(tower: TowerProcess, job_id: str) -> dict[str, Any]:
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=tower.base_url, timeout=DEADLINE + 5) as client:
        response = await client.get(f"/jobs/{job_id}/wait", params={"timeout": DEADLINE})
    assert response.status_code == 200, (response.status_code, time.monotonic() - started)
    record: dict[str, Any] = response.json()
    return record
