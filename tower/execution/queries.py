"""The runner's own SQL: whether a job's container is still its own to stop."""

from __future__ import annotations

from uuid import UUID

from tower.db.pool import Pool

# The pool slot now belongs to another lease of the job: a replica adopted the job (ADOPT
# moved the slot to its token) while this one stalled. Its container is not this run's to
# kill or remove any more.
SLOT_ADOPTED_AWAY = """
SELECT EXISTS (
    SELECT 1 FROM pool_slots WHERE slot_id = $1 AND status = 'busy' AND lease_token <> $2
)
"""


async def slot_adopted_away(pool: Pool, slot_id: str, lease_token: UUID) -> bool:
    adopted: bool = await pool.fetchval(SLOT_ADOPTED_AWAY, slot_id, lease_token)
    return adopted
