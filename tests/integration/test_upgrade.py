"""Upgrades: a tower that starts on a database left at an older revision, with jobs
queued in it, migrates it to head and runs those jobs (what `docker compose up` does
after a new tower image)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from alembic.script import ScriptDirectory

from tests.support.towers import insert_job, start_tower
from tower.db.migrate import alembic_config, migrate

pytestmark = pytest.mark.slow

DEADLINE = 60.0  # a bound on waiting, not an expectation of speed
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
OLDER = [
    script.revision
    for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    if script.revision != HEAD
]


@pytest.mark.parametrize("revision", sorted(OLDER))
async def test_a_starting_tower_upgrades_the_database_and_runs_its_queued_jobs(
    empty_database: str, tmp_path: Path, revision: str
) -> None:
    await migrate(empty_database, revision)
    db = await asyncpg.connect(empty_database)
    try:
        assert await db.fetchval("SELECT version_num FROM alembic_version") == revision
        job_id = await insert_job(db, "print queued before the upgrade")
        tower = await start_tower(empty_database, tmp_path, "upgraded", poll_interval=0.2)
        try:
            await _until_completed(db, job_id)
        finally:
            tower.terminate()
        assert await db.fetchval("SELECT version_num FROM alembic_version") == HEAD
        row = await db.fetchrow("SELECT result, ran_by FROM jobs WHERE job_id = $1", job_id)
        assert (row["result"], row["ran_by"]) == ("queued before the upgrade", "upgraded")
    finally:
        await db.close()


async def _until_completed(db: asyncpg.Connection, job_id: str) -> None:
    """Poll the row: there is no event to wait on across processes."""
    async with asyncio.timeout(DEADLINE):
        while True:
            status = await db.fetchval("SELECT status FROM jobs WHERE job_id = $1", job_id)
            if status == "completed":
                return
            await asyncio.sleep(0.1)
