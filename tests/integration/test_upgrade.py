"""Upgrades: a tower that starts on a database left at an older revision, with jobs
queued in it, migrates it to head and runs those jobs (what `docker compose up` does
after a new tower image)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from alembic.script import ScriptDirectory

from tests.support.postgres import create_empty_database
from tests.support.towers import insert_job, start_tower
from tower.db.embedded import LocalPostgres
from tower.db.migrate import alembic_config, migrate

pytestmark = pytest.mark.slow

DEADLINE = 120.0  # a bound on waiting, not an expectation of speed
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
OLDER = [
    script.revision
    for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    if script.revision != HEAD
]


# Towers starting at once: each upgrade is a process start and a job, mostly waiting; one
# after another they took five seconds each, and every migration adds one.
AT_ONCE = 4


async def test_a_starting_tower_upgrades_the_database_and_runs_its_queued_jobs(
    pg_server: LocalPostgres, tmp_path: Path
) -> None:
    # Every older revision, each in a database of its own, upgraded by a tower of its own.
    # Alembic's context is the process's own: the databases are set up one at a time.
    urls = {revision: await create_empty_database(pg_server) for revision in OLDER}
    for revision, url in urls.items():
        await migrate(url, revision)
    turns = asyncio.Semaphore(AT_ONCE)

    async def upgraded_from(revision: str) -> None:
        async with turns:
            await _upgraded_from(urls[revision], tmp_path, revision)

    # A failure cancels the others, whose towers stop with them.
    async with asyncio.TaskGroup() as group:
        for revision in sorted(OLDER):
            group.create_task(upgraded_from(revision))


async def _upgraded_from(url: str, tmp_path: Path, revision: str) -> None:
    db = await asyncpg.connect(url)
    try:
        assert await db.fetchval("SELECT version_num FROM alembic_version") == revision
        job_id = await insert_job(db, "print queued before the upgrade")
        tower = await start_tower(url, tmp_path, f"upgraded-{revision}", poll_interval=0.2)
        try:
            await _until_completed(db, job_id, revision)
        finally:
            await asyncio.to_thread(tower.terminate)
        assert await db.fetchval("SELECT version_num FROM alembic_version") == HEAD, revision
        row = await db.fetchrow("SELECT result, ran_by FROM jobs WHERE job_id = $1", job_id)
        ran = (row["result"], row["ran_by"])
        assert ran == ("queued before the upgrade", f"upgraded-{revision}"), revision
    finally:
        await db.close()


async def _until_completed(db: asyncpg.Connection, job_id: str, revision: str) -> None:
    """Poll the row: there is no event to wait on across processes."""
    try:
        async with asyncio.timeout(DEADLINE):
            while True:
                status = await db.fetchval("SELECT status FROM jobs WHERE job_id = $1", job_id)
                if status == "completed":
                    return
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"the job queued at revision {revision} did not complete in {DEADLINE:g} s")
