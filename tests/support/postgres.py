"""A throwaway PostgreSQL server for the test session, and a fresh database per test.

Each test gets its own database cloned from a migrated template, so tests never see
each other's rows and the migrations run once per session.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg

from tower.db.embedded import LocalPostgres
from tower.db.migrate import migrate

TEMPLATE = "parpaing_template"


def database_url(server: LocalPostgres, name: str) -> str:
    return server.url.rsplit("/", 1)[0] + f"/{name}"


async def prepare_template(server: LocalPostgres) -> None:
    admin = await asyncpg.connect(server.url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        await admin.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await admin.close()
    await migrate(database_url(server, TEMPLATE))


async def create_database(server: LocalPostgres) -> str:
    """A database cloned from the migrated template."""
    return await _create(server, f"t_{uuid.uuid4().hex[:12]}", f"TEMPLATE {TEMPLATE}")


async def create_empty_database(server: LocalPostgres) -> str:
    """A database with no schema at all, for tests of migrating from nothing or from
    an older revision."""
    return await _create(server, f"empty_{uuid.uuid4().hex[:12]}")


async def _create(server: LocalPostgres, name: str, options: str = "") -> str:
    admin = await asyncpg.connect(server.url)
    try:
        await admin.execute(f"CREATE DATABASE {name} {options}".rstrip())
    finally:
        await admin.close()
    return database_url(server, name)


def start_server(root: Path) -> LocalPostgres:
    server = LocalPostgres(root / "pgdata").start()
    asyncio.run(prepare_template(server))
    return server
