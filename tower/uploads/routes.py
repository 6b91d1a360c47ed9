"""/uploads: the body is the file or archive itself, streamed (never a form, never read
whole). Every route needs the API key."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status

from tower.uploads import service
from tower.uploads.archive import CONTENT_TYPES
from tower.uploads.schemas import UploadOut
from tower.web.deps import CurrentCaller, Db, SettingsDep, Writer, require_key
from tower.web.openapi import SECURED

router = APIRouter(prefix="/uploads", tags=["uploads"], dependencies=[Depends(require_key)])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such upload, or expired"}}
BODY = {
    "requestBody": {
        "required": True,
        "content": {
            kind: {"schema": {"type": "string", "format": "binary"}} for kind in CONTENT_TYPES
        },
    }
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=SECURED | BODY,
    summary="Upload a file (application/octet-stream, with ?filename=) or an archive "
    "(tar, tar.gz, zip), checked before it is kept",
    responses={
        400: {"description": "A single file without ?filename="},
        413: {"description": "Larger than MAX_UPLOAD_BYTES"},
        415: {"description": "Not a file or archive content type"},
        422: {
            "description": "An archive entry escapes, links out, is a device, or it expands too far"
        },
    },
)
async def create_upload(
    request: Request,
    db: Db,
    settings: SettingsDep,
    caller: Writer,
    content_type: Annotated[str, Header()] = "",
    filename: Annotated[str | None, Query(max_length=service.FILENAME_MAX)] = None,
) -> UploadOut:
    kind = service.upload_kind(content_type)
    name = service.checked_filename(kind, filename)
    return await service.create(db, settings, request.stream(), kind, name, caller.tenant)


@router.get("/{upload_id}", openapi_extra=SECURED, responses=NOT_FOUND)
async def get_upload(upload_id: str, db: Db, caller: CurrentCaller) -> UploadOut:
    return await service.get(db, upload_id, caller.sees)


@router.delete(
    "/{upload_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    openapi_extra=SECURED,
    responses=NOT_FOUND,
)
async def delete_upload(upload_id: str, db: Db, caller: Writer) -> Response:
    await service.delete(db, upload_id, caller.sees)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
