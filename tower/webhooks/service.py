"""Redelivering a job's terminal webhook. One transaction per call."""

from __future__ import annotations

from tower.db.ids import JOB_ID
from tower.db.pool import Pool, transaction
from tower.db.statuses import TERMINAL_STATUSES
from tower.errors import Conflict, NotFound
from tower.webhooks import queries
from tower.webhooks.schemas import Redelivery

# Deliveries one job may have, its first one included: each is kept (and listed on
# GET /jobs/{id}) with its attempts, so redelivering without end would grow the record
# without end.
MAX_DELIVERIES_PER_JOB = 20


async def redeliver(pool: Pool, job_id: str, sees: str | None) -> Redelivery:
    """Queue a new delivery (a new webhook-id) of the job's terminal event; another
    tenant's job (than `sees`, unless None) is not found."""
    if not JOB_ID.match(job_id):
        raise NotFound(f"Job {job_id} not found")
    async with transaction(pool) as connection:
        # The lock makes concurrent redeliveries of one job count one after another.
        found = await queries.lock_job_webhook(connection, job_id, sees)
        if found is None:
            raise NotFound(f"Job {job_id} not found")
        status, webhook_url = found
        if status not in TERMINAL_STATUSES:
            raise Conflict(f"Job is still {status}: its webhook is sent when it finishes")
        if webhook_url is None:
            raise Conflict(f"Job {job_id} has no webhook_url")
        delivery_id = await queries.redeliver(connection, job_id, MAX_DELIVERIES_PER_JOB)
    if delivery_id is None:
        raise Conflict(
            f"Job {job_id} already has {MAX_DELIVERIES_PER_JOB} webhook deliveries, "
            f"the most a job may have: it cannot be redelivered again"
        )
    return Redelivery(job_id=job_id, delivery_id=delivery_id)
