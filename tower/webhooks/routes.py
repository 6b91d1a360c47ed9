"""POST /jobs/{job_id}/webhook/redeliver (needs the API key)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from tower.web.deps import Db, Writer, require_key
from tower.web.openapi import SECURED
from tower.webhooks import service
from tower.webhooks.schemas import Redelivery

router = APIRouter(prefix="/jobs", tags=["webhooks"], dependencies=[Depends(require_key)])


@router.post(
    "/{job_id}/webhook/redeliver",
    status_code=202,
    response_model=Redelivery,
    openapi_extra=SECURED,
    summary="Send the job's terminal webhook again (a new delivery)",
    responses={
        404: {"description": "No such job"},
        409: {"description": "Not finished, no webhook_url, or too many deliveries"},
    },
)
async def redeliver(job_id: str, db: Db, caller: Writer) -> Redelivery:
    return await service.redeliver(db, job_id, caller.sees)
