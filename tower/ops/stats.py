"""GET /stats/jobs and /stats/activity: the figures the dashboard shows, as JSON.

/metrics has the same queue figures for Prometheus; these answer a browser, which
wants counts per status for one agent and the last hour minute by minute, and cannot
parse the text format cheaply. Like /metrics they are read from PostgreSQL, so every
replica answers the same. They need the API key: they describe the jobs, and a key
that sees only its tenant's jobs gets its tenant's figures (warm workers waiting for a
job are nobody's, so they count for everyone).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from tower.db.ids import SAFE_ID
from tower.db.pool import Pool
from tower.db.statuses import JOB_STATUSES
from tower.db.tables import DELIVERY_STATUSES, POOL_STATUSES
from tower.observability import queries
from tower.observability.metrics import DatabaseSnapshot, read_database
from tower.web.deps import CurrentCaller, Db, require_key
from tower.web.openapi import SECURED

router = APIRouter(prefix="/stats", tags=["ops"], dependencies=[Depends(require_key)])

DEFAULT_MINUTES = 60


class JobCounts(BaseModel):
    agent_id: str | None
    by_status: dict[str, int]
    total: int
    last_event_id: int = Field(
        description="Id of the newest state event when counted: GET /events with this "
        "Last-Event-ID tells of every change since, and nothing older."
    )


class Minute(BaseModel):
    minute: datetime
    submitted: int
    completed: int
    failed: int
    cancelled: int
    mean_duration_ms: float | None
    max_duration_ms: int | None


class Queue(BaseModel):
    depth: int
    oldest_age_seconds: float


class Activity(BaseModel):
    queue: Queue
    jobs_by_status: dict[str, int]
    pool: dict[str, int]
    webhook_deliveries: dict[str, int]
    minutes: list[Minute]


@router.get("/jobs", response_model=JobCounts, openapi_extra=SECURED)
async def job_counts(
    db: Db, caller: CurrentCaller, agent_id: Annotated[str | None, Query(pattern=SAFE_ID)] = None
) -> JobCounts:
    """Jobs per status (every status, zeros included), for one agent or all."""
    return await count_jobs(db, agent_id, caller.sees)


@router.get("/activity", response_model=Activity, openapi_extra=SECURED)
async def activity(
    db: Db, caller: CurrentCaller, minutes: Annotated[int, Query(ge=1, le=1440)] = DEFAULT_MINUTES
) -> Activity:
    """Queue depth and age, warm pool slots, webhook outbox, and jobs per minute over the
    last `minutes`."""
    return await read_activity(db, minutes, caller.sees)


async def count_jobs(pool: Pool, agent_id: str | None, tenant: str | None) -> JobCounts:
    # The event id first: a change after it and before the count is then told twice
    # (harmless for counts re-read on events), never missed.
    async with pool.acquire() as connection:
        last_event_id = await connection.fetchval(queries.LAST_STATE_EVENT_ID)
        rows = await connection.fetch(queries.JOB_COUNTS, agent_id, tenant)
    found = {str(row["status"]): int(row["jobs"]) for row in rows}
    by_status: dict[str, int] = {status: found.get(status, 0) for status in JOB_STATUSES}
    total = sum(by_status.values())
    return JobCounts(
        agent_id=agent_id, by_status=by_status, total=total, last_event_id=last_event_id
    )


async def read_activity(pool: Pool, minutes: int, tenant: str | None) -> Activity:
    snapshot = await read_database(pool) if tenant is None else await _tenant_figures(pool, tenant)
    rows = await pool.fetch(queries.ACTIVITY_BY_MINUTE, minutes, tenant)
    return Activity(
        queue=Queue(depth=snapshot.depth, oldest_age_seconds=snapshot.oldest_pending_age_seconds),
        jobs_by_status=_every(JOB_STATUSES, snapshot.jobs_by_status),
        pool=_every(POOL_STATUSES, snapshot.slots_by_status),
        webhook_deliveries=_every(DELIVERY_STATUSES, snapshot.deliveries_by_status),
        minutes=[Minute.model_validate(dict(row)) for row in rows],
    )


async def _tenant_figures(pool: Pool, tenant: str) -> DatabaseSnapshot:
    """What read_database reads, for one tenant's jobs, in one snapshot."""
    async with (
        pool.acquire() as connection,
        connection.transaction(isolation="repeatable_read", readonly=True),
    ):
        jobs = await connection.fetch(queries.TENANT_JOBS_BY_STATUS, tenant)
        slots = await connection.fetch(queries.TENANT_SLOTS_BY_STATUS, tenant)
        deliveries = await connection.fetch(queries.TENANT_DELIVERIES_BY_STATUS, tenant)
    oldest = next((float(r["oldest_age_seconds"]) for r in jobs if r["status"] == "pending"), 0.0)
    return DatabaseSnapshot(
        {str(row["status"]): int(row["jobs"]) for row in jobs},
        oldest,
        {str(row["status"]): int(row["slots"]) for row in slots},
        {str(row["status"]): int(row["deliveries"]) for row in deliveries},
    )


def _every(statuses: tuple[str, ...], found: dict[str, int]) -> dict[str, int]:
    """Every status, zeros included, so a client never meets a missing key."""
    return {status: found.get(status, 0) for status in statuses}
