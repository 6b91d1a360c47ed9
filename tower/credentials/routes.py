"""/credentials: every route needs the API key, reads included (names are not public)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response, status

from tower.credentials import service
from tower.credentials.schemas import CredentialIn, CredentialList, CredentialOut
from tower.web.deps import Db, SettingsDep, Writer, require_key
from tower.web.openapi import SECURED

router = APIRouter(prefix="/credentials", tags=["credentials"], dependencies=[Depends(require_key)])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No credential of that name"}}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=SECURED,
    summary="Store a named secret, encrypted with SECRETS_KEY; it is never returned",
    responses={409: {"description": "The name is taken, or SECRETS_KEY is not set"}},
)
async def create_credential(
    body: CredentialIn, db: Db, settings: SettingsDep, caller: Writer
) -> CredentialOut:
    return await service.create(db, settings.secrets_key.get_secret_value(), body)


@router.get("", openapi_extra=SECURED, summary="Names and metadata, never secrets")
async def list_credentials(db: Db) -> CredentialList:
    return await service.list_all(db)


@router.get("/{name}", openapi_extra=SECURED, responses=NOT_FOUND)
async def get_credential(name: str, db: Db) -> CredentialOut:
    return await service.get(db, name)


@router.delete(
    "/{name}", status_code=status.HTTP_204_NO_CONTENT, openapi_extra=SECURED, responses=NOT_FOUND
)
async def delete_credential(name: str, db: Db, caller: Writer) -> Response:
    await service.delete(db, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
