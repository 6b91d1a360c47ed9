"""Is this gateway token a running job's? The gateway asks before every provider call."""

from __future__ import annotations

from tower.db.pool import Pool
from tower.gateway import queries, tokens


async def job_of_token(pool: Pool, token: str) -> str | None:
    """The id of the running job `token` was minted for, or None."""
    if not tokens.plausible(token):
        return None
    async with pool.acquire() as connection:
        return await queries.running_job_of_token(connection, tokens.digest(token))
