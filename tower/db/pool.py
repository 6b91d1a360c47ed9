"""The asyncpg connection pool, with JSON codecs so jsonb columns come back as Python values."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from asyncpg import Connection, Pool

__all__ = ["Connection", "Pool", "create_pool", "transaction"]


async def _init_connection(connection: Any) -> None:
    for name in ("json", "jsonb"):
        await connection.set_type_codec(
            name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def create_pool(database_url: str, size: int) -> Pool:
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=size, init=_init_connection, command_timeout=60
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def transaction(pool: Pool) -> AsyncIterator[Connection]:
    """One transaction, committed when the block ends without error."""
    async with pool.acquire() as connection, connection.transaction():
        yield connection
