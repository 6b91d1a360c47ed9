"""Adoption: a job whose tower died goes on with another replica on its Docker host.

The agent in the job's container does not need its tower while it runs: it talks to the
gateway with its attempt's token, and its output goes to the container's log. So when a
job's lease runs out and its container still runs on this replica's Docker host (its busy
pool slot says which host and container), the reaper's round adopts it before reaping:

1. `queries.adoptable`: running jobs with an expired lease and a container on this host;
2. the runner checks each container still runs (one that is gone is left to REAP, which
   fails or requeues it once the adoption grace is over);
3. `lifecycle.ADOPT` (one statement): a new lease token and owner, the same attempt and
   gateway token hash, the pool slot moved to the new token; fenced on the token found;
4. the dispatcher runs it as if claimed (`Dispatcher.adopt`): the runner follows the
   container's log from its start, skipping what the job's log already holds, and the
   outcome is written with the new token. The dead owner, should it come back, is fenced.

A repository job that publishes (`output`) is not adopted: its clone, which the branch
is committed from, died with its tower; it is reaped as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tower.db.pool import Pool, transaction
from tower.errors import TowerError
from tower.execution.adoption import Adopting, Adoption
from tower.execution.runner import Runner
from tower.queue import queries

log = logging.getLogger(__name__)

Launch = Callable[[Adoption], None]


class Adopter:
    def __init__(
        self,
        pool: Pool,
        runner: Adopting,
        replica_id: str,
        lease_seconds: float,
        launch: Launch,
        accepting: Callable[[], bool],
    ) -> None:
        self._pool = pool
        self._runner = runner
        self._replica_id = replica_id
        self._lease_seconds = lease_seconds
        self._launch = launch
        self._accepting = accepting

    async def adopt_once(self) -> list[str]:
        """One round; returns the ids of the jobs this replica adopted."""
        host = await self._runner.docker_host()
        if host is None or not self._accepting():
            return []
        async with self._pool.acquire() as connection:
            orphans = await queries.adoptable(connection, host, self._lease_seconds)
        alive = [orphan for orphan in orphans if await self._adoptable(orphan)]
        if not alive:
            return []
        async with transaction(self._pool) as connection:
            adopted = await queries.adopt(
                connection, self._replica_id, self._lease_seconds, host, alive
            )
        for job in adopted:
            await self._start(job)
        return [job.job.job_id for job in adopted]

    async def _adoptable(self, orphan: queries.Orphan) -> bool:
        if orphan.publishes:
            return False
        try:
            return await self._runner.container_running(orphan.container_id)
        except TowerError as problem:
            log.warning("job %s: not adopted: %s", orphan.job_id, problem.message)
            return False

    async def _start(self, adopted: queries.Adopted) -> None:
        job = adopted.job
        # Read once the job is ours: the dead owner can no longer add to its log.
        async with self._pool.acquire() as connection:
            stored = await queries.stored_log_bytes(connection, job.job_id)
        log.warning(
            "job %s: its tower stopped renewing its lease; adopted by %s (container %s)",
            job.job_id,
            self._replica_id,
            adopted.container_id[:12],
        )
        self._launch(
            Adoption(job, adopted.slot_id, adopted.container_id, adopted.started_epoch, stored)
        )


def adopter_for(
    runner: Runner,
    pool: Pool,
    replica_id: str,
    lease_seconds: float,
    launch: Launch,
    accepting: Callable[[], bool],
) -> Adopter | None:
    """An adopter when the runner's jobs can outlive their tower (the Docker runner)."""
    if not isinstance(runner, Adopting):
        return None
    return Adopter(pool, runner, replica_id, lease_seconds, launch, accepting)
