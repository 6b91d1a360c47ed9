"""The sessions API: continue a finished job, list a session's turns."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from tower.configs.store import ConfigStore
from tower.jobs.schemas import ContinueRequest, Submitted
from tower.sessions import service
from tower.sessions.schemas import Session
from tower.tenants.admission import Quotas
from tower.web.deps import CurrentCaller, Db, Metrics, SettingsDep, Writer, held, require_key
from tower.web.openapi import SECURED

router = APIRouter(tags=["sessions"], dependencies=[Depends(require_key)])
Configs = Annotated[ConfigStore, Depends(held("configs"))]
TenantQuotas = Annotated[Quotas, Depends(held("quotas"))]


@router.post(
    "/jobs/{job_id}/continue",
    status_code=202,
    response_model=Submitted,
    openapi_extra=SECURED,
    responses={
        404: {"description": "unknown job, or its session state expired (SESSION_TTL_HOURS)"},
        409: {
            "description": "the job is pending or running, never started, or its engine"
            " cannot resume"
        },
    },
)
async def continue_job(
    job_id: str,
    body: ContinueRequest,
    db: Db,
    configs: Configs,
    settings: SettingsDep,
    metrics: Metrics,
    caller: Writer,
    quotas: TenantQuotas,
) -> Submitted:
    """A new job in the job's session: same engine and profile, the options given here,
    started from the workspace and conversation the job left. Two continues of one job
    both run, as siblings from the same state (docs/sessions.md)."""
    return await service.continue_job(db, configs, settings, metrics, job_id, body, caller, quotas)


@router.get("/sessions/{session_id}", response_model=Session, openapi_extra=SECURED)
async def get_session(session_id: str, db: Db, caller: CurrentCaller) -> Session:
    """A session's turns in order (its id is its first turn's job id)."""
    return await service.get_session(db, session_id, caller.sees)
