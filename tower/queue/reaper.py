"""The reaper: hands back running jobs whose owner stopped renewing its lease.

Every replica runs one, every half lease. A job with attempts left goes back to the
queue; one without is failed with failure_reason='tower_lost'. Racing reapers are safe
(see queries.REAP).

After the database was unreachable (a restart, a network cut), every lease may have
lapsed while no owner could renew it. The reaper then waits one full lease of
working connectivity before reaping again, so live owners renew first and only the
jobs of replicas that are really gone are handed back. The database's own start time
says the same of a restart this reaper did not see (one between two of its rounds, or
before it started): nothing is reaped for a lease after it (queries.DATABASE_SETTLING).

With the Docker runner, a job whose container still runs on this replica's Docker host
is adopted instead (tower/queue/adoption.py), before reaping; REAP leaves such a job
one lease longer, so a replica on its host has the time to.
"""

from __future__ import annotations

import asyncio
import logging

from tower.db.outage import DATABASE_ERRORS
from tower.db.periodic import Periodic
from tower.db.pool import Pool, transaction
from tower.observability.metrics import TowerMetrics
from tower.queue import queries
from tower.queue.adoption import Adopter
from tower.settings import Settings

log = logging.getLogger(__name__)


class Reaper:
    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        replica_id: str,
        metrics: TowerMetrics | None = None,
        adopter: Adopter | None = None,
    ) -> None:
        self._adopter = adopter
        self._pool = pool
        self._metrics = metrics or TowerMetrics(replica_id)
        self._replica_id = replica_id
        self._lease_seconds = settings.lease_seconds
        self._connected_since: float | None = None
        self._loop = Periodic("reaper", settings.lease_seconds / 2, self.run_round)

    async def start(self) -> None:
        await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def reap_once(self) -> dict[str, str]:
        """One round; returns job_id -> new status for every job handed back."""
        async with transaction(self._pool) as connection:
            reaped = await queries.reap(connection, adopt_grace=self._lease_seconds)
        for job_id, status in reaped.items():
            log.warning("job %s: lease expired; %s by %s", job_id, status, self._replica_id)
            if status == "failed":
                self._metrics.job_finished(status)
        return reaped

    async def run_round(self) -> None:
        """One scheduled round: reaps only once owners have had a lease to renew."""
        try:
            if not self._owners_had_time_to_renew():
                await self._check_connectivity()
            elif not await self._database_settling():
                await self._adopt()
                await self.reap_once()
        except DATABASE_ERRORS:
            self._connected_since = None
            raise

    async def _adopt(self) -> None:
        """Adopt what this replica can before reaping; a failure leaves it to the reap."""
        if self._adopter is None:
            return
        try:
            await self._adopter.adopt_once()
        except DATABASE_ERRORS:
            raise
        except Exception:
            log.exception("adoption round failed; reaping as usual")

    async def _database_settling(self) -> bool:
        """Adopting or reaping now would take jobs from owners that had no lease to renew
        since the database restarted (queries.DATABASE_SETTLING)."""
        async with self._pool.acquire() as connection:
            settling = await queries.database_settling(connection, self._lease_seconds)
        if settling:
            log.info("not reaping: the database started less than a lease ago")
        return settling

    def _owners_had_time_to_renew(self) -> bool:
        since = self._connected_since
        return since is not None and self._now() - since >= self._lease_seconds

    async def _check_connectivity(self) -> None:
        async with self._pool.acquire() as connection:
            await connection.execute(queries.PING)
        if self._connected_since is None:
            self._connected_since = self._now()

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()
