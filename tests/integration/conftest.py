from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tower.db.pool import Pool, create_pool


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    """The test's database through tower's own pool (JSON codecs included)."""
    pool = await create_pool(database_url, 8)
    yield pool
    await pool.close()


@pytest.fixture
async def db(pool: Pool) -> AsyncIterator[Any]:
    async with pool.acquire() as connection:
        yield connection
