from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg

from tower.db.migrate import ROOT, migrate


async def test_migrations_are_idempotent_under_concurrent_starts(database_url: str) -> None:
    # Replicas start together: five concurrent migrate() calls must all succeed.
    await asyncio.gather(*(migrate(database_url) for _ in range(5)))
    connection = await asyncpg.connect(database_url)
    try:
        version = await connection.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await connection.close()
    assert version is not None


def test_schema_matches_tables(database_url: str) -> None:
    check = subprocess.run(
        [sys.executable, "-m", "alembic", "check"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr
