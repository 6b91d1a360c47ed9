"""The jobs API (DESIGN §3). Every route needs the API key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from tower.configs.store import ConfigStore
from tower.jobs import service
from tower.jobs.schemas import (
    IDEMPOTENCY_KEY,
    JOB_ID,
    SAFE_ID,
    Cancelled,
    JobPage,
    JobRecord,
    JobRequest,
    JobStatus,
    Submitted,
)
from tower.tenants.admission import Quotas
from tower.web.deps import (
    CurrentCaller,
    Db,
    Hub,
    Metrics,
    SettingsDep,
    Stopping,
    Writer,
    held,
    require_key,
)
from tower.web.openapi import SECURED
from tower.web.streams import Limits, StreamKey, revocation_of, unless_gone

# OFFSET is a bigint in PostgreSQL; a larger number is a 422, not a failed query.
BIGINT_MAX = 2**63 - 1

router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[Depends(require_key)])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=service.IDEMPOTENCY_HEADER,
        pattern=IDEMPOTENCY_KEY,
        description="Same key and same body: the same job again (Stripe semantics).",
    ),
]

Inserts = Annotated[service.JobInserts, Depends(held("job_inserts"))]
TenantQuotas = Annotated[Quotas, Depends(held("quotas"))]
Configs = Annotated[ConfigStore, Depends(held("configs"))]


@router.post(
    "",
    status_code=202,
    response_model=Submitted,
    openapi_extra=SECURED,
    responses={
        429: {
            "description": "A quota of the key's tenant (submits per minute, queue depth, "
            "spend per day or month) is reached; Retry-After says when to try again"
        }
    },
)
async def submit(
    request: JobRequest,
    response: Response,
    db: Db,
    inserts: Inserts,
    configs: Configs,
    settings: SettingsDep,
    metrics: Metrics,
    caller: Writer,
    quotas: TenantQuotas,
    idempotency_key: IdempotencyKey = None,
) -> Submitted:
    outcome = await service.submit_job(
        db,
        inserts,
        configs,
        settings,
        metrics,
        request,
        idempotency_key,
        caller,
        quotas,
    )
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return Submitted(job_id=outcome.job_id)


@router.get("", response_model=JobPage, openapi_extra=SECURED)
async def list_jobs(
    db: Db,
    caller: CurrentCaller,
    status: JobStatus | None = None,
    agent_id: Annotated[str | None, Query(pattern=SAFE_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=BIGINT_MAX)] = 0,
    session_id: Annotated[
        str | None, Query(pattern=JOB_ID.pattern, description="the turns of one session")
    ] = None,
    tenant: Annotated[
        str | None, Query(pattern=SAFE_ID, description="one tenant's jobs (keys that see several)")
    ] = None,
) -> JobPage:
    """The jobs the key sees, newest first: its tenant's, or every tenant's for admin and
    operator keys."""
    tenants = (caller.sees, tenant)
    return await service.list_jobs(db, status, agent_id, limit, offset, session_id, tenants)


@router.get("/{job_id}", response_model=JobRecord, openapi_extra=SECURED)
async def get_job(job_id: str, db: Db, caller: CurrentCaller) -> JobRecord:
    return await service.get_job(db, job_id, caller.sees)


@router.delete("/{job_id}", response_model=Cancelled, openapi_extra=SECURED)
async def cancel_job(job_id: str, db: Db, metrics: Metrics, caller: Writer) -> Cancelled:
    return await service.cancel_job(db, metrics, job_id, caller.sees)


@router.get(
    "/{job_id}/wait",
    response_model=JobRecord,
    openapi_extra=SECURED,
    responses={
        429: {"description": "MAX_STREAMS_PER_KEY streams and long polls open (Retry-After)"},
        503: {"description": "MAX_STREAMS open on this replica, or it is stopping"},
    },
)
async def wait_for_job(
    job_id: str,
    request: Request,
    db: Db,
    hub: Hub,
    stopping: Stopping,
    metrics: Metrics,
    limits: Limits,
    key: StreamKey,
    caller: CurrentCaller,
    seconds: Annotated[
        float, Query(alias="timeout", gt=0, le=3600, description="Seconds to wait")
    ] = 30,
) -> JobRecord:
    """The job once it has finished, or 408 after `timeout` seconds. Holds one of the
    key's open-stream slots meanwhile, given back at once if the client leaves."""
    with limits.slot(key), metrics.holding("wait"), revocation_of(request, caller) as revoked:
        wait = service.wait_for_job(db, hub, job_id, seconds, stopping, caller.sees)
        return await unless_gone(request, wait, revoked)
