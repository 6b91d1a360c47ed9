"""The jobs this replica runs, and the heartbeat that keeps their leases.

A job's task runs while its lease is not known to be gone. When a heartbeat finds a
token gone (the job was cancelled, or reaped after a stall), the task is cancelled.

A heartbeat that fails (PostgreSQL restarting, or unreachable from here) gives up no
job: the run goes on, and the next heartbeat that gets through renews every lease
still held, stopping only the jobs whose lease went meanwhile. After a restart nobody
reaps for one lease (queries.DATABASE_SETTLING), so a replica that renews within that
keeps all its jobs. A replica cut off while the others still reach the database loses
its jobs to their reapers; its late writes (log, artifacts, finish) are fenced off by
the lease token, and its runs stop at its first heartbeat back.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from tower.db.outage import DATABASE_ERRORS
from tower.db.pool import Pool
from tower.execution.runner import ClaimedJob, RunOutcome
from tower.queue import queries

log = logging.getLogger(__name__)

RENEWALS_PER_LEASE = 3


@dataclass
class OwnedJob:
    job: ClaimedJob
    task: asyncio.Task[RunOutcome]


class Leases:
    def __init__(self, pool: Pool, lease_seconds: float) -> None:
        self._pool = pool
        self._lease_seconds = lease_seconds
        self._owned: dict[str, OwnedJob] = {}
        # The event loop's time of the first heartbeat that failed since the last that
        # got through; None while they get through.
        self._unrenewed_since: float | None = None

    @property
    def renew_interval(self) -> float:
        return self._lease_seconds / RENEWALS_PER_LEASE

    def __len__(self) -> int:
        return len(self._owned)

    def add(self, job: ClaimedJob, task: asyncio.Task[RunOutcome]) -> None:
        self._owned[job.job_id] = OwnedJob(job, task)

    def remove(self, job_id: str) -> None:
        self._owned.pop(job_id, None)

    def cancel(self, job_id: str) -> bool:
        """Stop the job's run if this replica runs it; the caller owns the row's state."""
        owned = self._owned.get(job_id)
        if owned is None:
            return False
        owned.task.cancel()
        return True

    def cancel_all(self) -> list[asyncio.Task[RunOutcome]]:
        tasks = [owned.task for owned in self._owned.values()]
        for task in tasks:
            task.cancel()
        return tasks

    async def heartbeat(self) -> None:
        """One renewal of every lease held (a Periodic round: a database error is
        raised, logged by the loop, and the next round tries again)."""
        try:
            async with asyncio.timeout(self.renew_interval):
                await self._renew()
        except DATABASE_ERRORS:
            self._note_failure()
            raise

    async def _renew(self) -> None:
        owned = list(self._owned.values())
        if not owned:
            self._note_renewed()
            return
        async with self._pool.acquire() as connection:
            tokens = [entry.job.lease_token for entry in owned]
            held = await queries.heartbeat(connection, tokens, self._lease_seconds)
        self._note_renewed(len(held))
        for entry in owned:
            if entry.job.lease_token not in held and not entry.task.done():
                log.info("job %s: lease gone (cancelled or reaped); stopping it", entry.job.job_id)
                entry.task.cancel()

    def _note_failure(self) -> None:
        if self._unrenewed_since is None:
            self._unrenewed_since = asyncio.get_running_loop().time()
            if self._owned:
                log.warning(
                    "leases of %d running job(s) not renewed: the database is unreachable; "
                    "the jobs go on, and their leases are renewed once it answers",
                    len(self._owned),
                )

    def _note_renewed(self, held: int = 0) -> None:
        since, self._unrenewed_since = self._unrenewed_since, None
        if since is None or not self._owned:
            return
        unrenewed = asyncio.get_running_loop().time() - since
        log.warning(
            "database back after %.1fs without lease renewals: %d of %d lease(s) renewed",
            unrenewed,
            held,
            len(self._owned),
        )
