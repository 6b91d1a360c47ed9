"""/jobs/{job_id}/artifacts and /jobs/{job_id}/diff: what a job created or changed in its
workspace, streamed from PostgreSQL. Every route needs the API key."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Response
from fastapi.responses import StreamingResponse

from tower.artifacts import service
from tower.artifacts.schemas import ArtifactList
from tower.web.deps import CurrentCaller, Db, require_key
from tower.web.openapi import SECURED

router = APIRouter(prefix="/jobs", tags=["artifacts"], dependencies=[Depends(require_key)])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such job or artifact"}}
BINARY: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}, "description": "The file"},
    206: {"description": "The byte range asked for (Range: bytes=...)"},
    416: {"description": "No byte of the file is in the range asked for"},
}


@router.get(
    "/{job_id}/artifacts",
    openapi_extra=SECURED,
    responses=NOT_FOUND,
    summary="The files the job created or changed under /workspace, and what was left out",
)
async def list_artifacts(job_id: str, db: Db, caller: CurrentCaller) -> ArtifactList:
    return await service.listing(db, job_id, caller.sees)


@router.get(
    "/{job_id}/artifacts.tar.gz",
    openapi_extra=SECURED,
    response_class=StreamingResponse,
    responses=NOT_FOUND | {200: {"content": {"application/gzip": {}}}},
    summary="Every artifact of the job, as one tar.gz (streamed)",
)
async def artifacts_tar_gz(job_id: str, db: Db, caller: CurrentCaller) -> StreamingResponse:
    found = await service.files(db, job_id, caller.sees)
    disposition = f'attachment; filename="{job_id}-artifacts.tar.gz"'
    return StreamingResponse(
        service.tar_gz(db, found),
        media_type="application/gzip",
        headers={"Content-Disposition": disposition},
    )


@router.get(
    "/{job_id}/artifacts/{path:path}",
    openapi_extra=SECURED,
    response_class=StreamingResponse,
    responses=NOT_FOUND | BINARY,
    summary="One artifact's bytes (Range supported)",
)
async def get_artifact(
    job_id: str,
    path: str,
    db: Db,
    caller: CurrentCaller,
    range_: Annotated[str | None, Header(alias="Range")] = None,
) -> Response:
    found = await service.find(db, job_id, path, caller.sees)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{found.sha256}"',
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(found.path.split('/')[-1])}",
    }
    try:
        wanted = service.byte_range(range_, found.size)
    except service.Unsatisfiable:
        headers["Content-Range"] = f"bytes */{found.size}"
        return Response(status_code=416, headers=headers)
    start, end = wanted or (0, found.size)
    headers["Content-Length"] = str(end - start)
    if wanted is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{found.size}"
    return StreamingResponse(
        service.read(db, found.artifact_id, start, end),
        status_code=206 if wanted is not None else 200,
        media_type="application/octet-stream",
        headers=headers,
    )


@router.get(
    "/{job_id}/diff",
    openapi_extra=SECURED,
    response_class=StreamingResponse,
    responses=NOT_FOUND | {200: {"content": {"text/x-diff": {}}}},
    summary="A repository job's changes as a binary-safe git diff against its commit",
)
async def get_diff(job_id: str, db: Db, caller: CurrentCaller) -> StreamingResponse:
    found = await service.diff(db, job_id, caller.sees)
    return StreamingResponse(
        service.read(db, found.artifact_id, 0, found.size),
        media_type="text/x-diff",
        headers={"Content-Length": str(found.size)},
    )
