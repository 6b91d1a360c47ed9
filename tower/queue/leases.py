"""The jobs this replica runs, and the heartbeat that keeps their leases.

A job's task runs only while its lease is known to hold. When a heartbeat finds a
token gone (the job was cancelled, or reaped after a stall), the task is cancelled.
Each job also has a local deadline just short of its lease, pushed back by every
successful renewal: if the database stays unreachable that long, the task is
cancelled before another replica could reap the job, so it never runs twice at once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from tower.db.pool import Pool
from tower.execution.runner import ClaimedJob, RunOutcome
from tower.queue import queries

log = logging.getLogger(__name__)

RENEWALS_PER_LEASE = 3
# The run stops this fraction of a lease before the lease could lapse in the database.
SAFETY_MARGIN = 0.1


@dataclass
class OwnedJob:
    job: ClaimedJob
    task: asyncio.Task[RunOutcome]
    deadline: asyncio.TimerHandle


class Leases:
    def __init__(self, pool: Pool, lease_seconds: float) -> None:
        self._pool = pool
        self._lease_seconds = lease_seconds
        self._owned: dict[str, OwnedJob] = {}

    @property
    def renew_interval(self) -> float:
        return self._lease_seconds / RENEWALS_PER_LEASE

    def __len__(self) -> int:
        return len(self._owned)

    def add(self, job: ClaimedJob, task: asyncio.Task[RunOutcome], claimed_at: float) -> None:
        """`claimed_at` is the event loop's time when the claim was sent."""
        deadline = self._deadline(job, task, claimed_at)
        self._owned[job.job_id] = OwnedJob(job, task, deadline)

    def remove(self, job_id: str) -> None:
        owned = self._owned.pop(job_id, None)
        if owned is not None:
            owned.deadline.cancel()

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
        async with asyncio.timeout(self.renew_interval):
            await self._renew()

    async def _renew(self) -> None:
        owned = list(self._owned.values())
        if not owned:
            return
        # The database sets lease_until from its own clock, after this: a safe lower bound.
        sent_at = asyncio.get_running_loop().time()
        async with self._pool.acquire() as connection:
            tokens = [entry.job.lease_token for entry in owned]
            held = await queries.heartbeat(connection, tokens, self._lease_seconds)
        for entry in owned:
            if entry.job.lease_token in held:
                entry.deadline.cancel()
                entry.deadline = self._deadline(entry.job, entry.task, sent_at)
            elif not entry.task.done():
                log.info("job %s: lease gone (cancelled or reaped); stopping it", entry.job.job_id)
                entry.task.cancel()

    def _deadline(
        self, job: ClaimedJob, task: asyncio.Task[RunOutcome], renewed_at: float
    ) -> asyncio.TimerHandle:
        when = renewed_at + self._lease_seconds * (1 - SAFETY_MARGIN)
        return asyncio.get_running_loop().call_at(when, _lease_lapsing, job, task)


def _lease_lapsing(job: ClaimedJob, task: asyncio.Task[RunOutcome]) -> None:
    if not task.done():
        log.warning("job %s: lease could not be renewed in time; stopping it", job.job_id)
        task.cancel()
