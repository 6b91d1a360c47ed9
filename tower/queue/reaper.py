"""The reaper: hands back running jobs whose owner stopped renewing its lease.

Every replica runs one, every half lease. A job with attempts left goes back to the
queue; one without is failed with failure_reason='tower_lost'. Racing reapers are safe
(see queries.REAP).

Seam for later: with the Docker runner, a job whose container still runs on this
host should be re-adopted instead of requeued; that check goes before `queries.reap`.
"""

from __future__ import annotations

import logging

from tower.db.pool import Pool, transaction
from tower.queue import queries
from tower.queue.periodic import Periodic
from tower.settings import Settings

log = logging.getLogger(__name__)


class Reaper:
    def __init__(self, settings: Settings, pool: Pool, replica_id: str) -> None:
        self._pool = pool
        self._replica_id = replica_id
        self._loop = Periodic("reaper", settings.lease_seconds / 2, self._round)

    async def start(self) -> None:
        await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def reap_once(self) -> dict[str, str]:
        """One round; returns job_id -> new status for every job handed back."""
        async with transaction(self._pool) as connection:
            reaped = await queries.reap(connection)
        for job_id, status in reaped.items():
            log.warning("job %s: lease expired; %s by %s", job_id, status, self._replica_id)
        return reaped

    async def _round(self) -> None:
        await self.reap_once()
