"""The jobs this replica runs, and the heartbeat that keeps their leases.

A job's task runs only while its lease is known to hold. When a heartbeat finds a
token gone (the job was cancelled, or reaped after a stall), or when heartbeats have
failed for long enough that the lease may have lapsed, the task is cancelled, so a
job requeued elsewhere never runs twice at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from tower.db.pool import Pool
from tower.execution.runner import ClaimedJob, RunOutcome
from tower.queue import queries

log = logging.getLogger(__name__)

# Renew three times per lease; give up on a lease once two renewals in a row have
# failed, which still leaves a third of the lease before another replica may reap it.
RENEWALS_PER_LEASE = 3
GIVE_UP_FRACTION = 0.6


@dataclass
class OwnedJob:
    job: ClaimedJob
    task: asyncio.Task[RunOutcome]
    renewed_at: float  # monotonic time the last successful renewal was sent


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
        self._owned[job.job_id] = OwnedJob(job, task, claimed_at)

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
        try:
            async with asyncio.timeout(self.renew_interval):
                await self._renew()
        finally:
            self._cancel_overdue()

    async def _renew(self) -> None:
        owned = list(self._owned.values())
        if not owned:
            return
        sent_at = time.monotonic()
        async with self._pool.acquire() as connection:
            tokens = [entry.job.lease_token for entry in owned]
            held = await queries.heartbeat(connection, tokens, self._lease_seconds)
        for entry in owned:
            if entry.job.lease_token in held:
                entry.renewed_at = sent_at
            elif not entry.task.done():
                log.info("job %s: lease gone (cancelled or reaped); stopping it", entry.job.job_id)
                entry.task.cancel()

    def _cancel_overdue(self) -> None:
        limit = time.monotonic() - self._lease_seconds * GIVE_UP_FRACTION
        for entry in self._owned.values():
            if entry.renewed_at < limit and not entry.task.done():
                log.warning("job %s: lease could not be renewed; stopping it", entry.job.job_id)
                entry.task.cancel()
