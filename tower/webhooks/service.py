"""Redelivering a job's terminal webhook. One transaction per call."""

from __future__ import annotations

from tower.db.ids import JOB_ID
from tower.db.pool import Pool, transaction
from tower.db.statuses import TERMINAL_STATUSES
from tower.errors import Conflict, NotFound
from tower.webhooks import queries
from tower.webhooks.schemas import Redelivery


async def redeliver(pool: Pool, job_id: str) -> Redelivery:
    """Queue a new delivery (a new webhook-id) of the job's terminal event."""
    if not JOB_ID.match(job_id):
        raise NotFound(f"Job {job_id} not found")
    async with transaction(pool) as connection:
        delivery_id = await queries.redeliver(connection, job_id)
        if delivery_id is not None:
            return Redelivery(job_id=job_id, delivery_id=delivery_id)
        found = await queries.job_webhook(connection, job_id)
    if found is None:
        raise NotFound(f"Job {job_id} not found")
    status, _ = found
    if status not in TERMINAL_STATUSES:
        raise Conflict(f"Job is still {status}: its webhook is sent when it finishes")
    raise Conflict(f"Job {job_id} has no webhook_url")
