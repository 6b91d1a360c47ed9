"""The asyncpg connection pool, with JSON codecs so jsonb columns come back as Python values."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from asyncpg import Connection, Pool

__all__ = ["Connection", "Pool", "create_pool", "create_statement_pool", "transaction"]

# The queue's hot path (group-committed submits and finishes, claims) holds at most one
# connection per writer at a time: the two group commits and the claim loop, plus one spare.
STATEMENT_POOL_SIZE = 4


def encode_json(value: Any) -> str:
    """JSON for a statement's argument. NaN and ±Infinity are refused here (ValueError,
    which asyncpg raises as DataError), not sent as the `NaN` PostgreSQL would refuse."""
    return json.dumps(value, allow_nan=False)


async def _init_connection(connection: Any) -> None:
    for name in ("json", "jsonb"):
        await connection.set_type_codec(
            name, encoder=encode_json, decoder=json.loads, schema="pg_catalog"
        )


async def create_pool(database_url: str, size: int) -> Pool:
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=size, init=_init_connection, command_timeout=60
    )
    assert pool is not None
    return pool


async def create_statement_pool(database_url: str, size: int = STATEMENT_POOL_SIZE) -> Pool:
    """A pool for statements that leave no session state behind (no session advisory
    locks, SET, LISTEN or cursors): nothing but single statements and transactions.

    Its connections skip the reset query asyncpg runs on every release (advisory unlock,
    CLOSE ALL, UNLISTEN *, RESET ALL): a round trip and four statements that cost about a
    tenth of the tower's CPU per job on the queue's hot path. An open transaction is still
    rolled back on release (asyncpg does that before calling `reset`). Anything that needs
    session state uses the main pool, whose connections are fully reset.
    """
    pool = await asyncpg.create_pool(
        database_url,
        min_size=1,
        max_size=size,
        init=_init_connection,
        command_timeout=60,
        reset=_no_session_state,
    )
    assert pool is not None
    return pool


async def _no_session_state(_connection: Any) -> None:
    return None


@asynccontextmanager
async def transaction(pool: Pool) -> AsyncIterator[Connection]:
    """One transaction, committed when the block ends without error."""
    async with pool.acquire() as connection, connection.transaction():
        yield connection
