"""/credentials: every route needs a key, reads included (names are not public). A
credential is its tenant's: a key acts on its own tenant's, and a key that sees every
tenant (admin, operator) names another with `?tenant=`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status

from tower.access import Caller
from tower.credentials import service
from tower.credentials.schemas import CredentialIn, CredentialList, CredentialOut
from tower.db.ids import SAFE_ID
from tower.errors import NotFound
from tower.web.deps import CurrentCaller, Db, SettingsDep, Writer, require_key
from tower.web.openapi import SECURED

router = APIRouter(prefix="/credentials", tags=["credentials"], dependencies=[Depends(require_key)])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No credential of that name"}}
Tenant = Annotated[
    str | None,
    Query(pattern=SAFE_ID, description="another tenant's (keys that see every tenant)"),
]


def _tenant(caller: Caller, asked: str | None) -> str:
    tenant = caller.addresses(asked)
    if tenant is None:
        raise NotFound(f"no tenant {asked!r}")
    return tenant


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=SECURED,
    summary="Store a named secret, encrypted with SECRETS_KEY; it is never returned",
    responses={409: {"description": "The name is taken, or SECRETS_KEY is not set"}},
)
async def create_credential(
    body: CredentialIn, db: Db, settings: SettingsDep, caller: Writer, tenant: Tenant = None
) -> CredentialOut:
    secrets_key = settings.secrets_key.get_secret_value()
    return await service.create(db, secrets_key, body, _tenant(caller, tenant))


@router.get("", openapi_extra=SECURED, summary="Names and metadata, never secrets")
async def list_credentials(db: Db, caller: CurrentCaller, tenant: Tenant = None) -> CredentialList:
    """The key's tenant's credentials; every tenant's for admin and operator keys unless
    `?tenant=` names one."""
    if caller.sees is None and tenant is None:
        return await service.list_all(db, None)
    return await service.list_all(db, _tenant(caller, tenant))


@router.get("/{name}", openapi_extra=SECURED, responses=NOT_FOUND)
async def get_credential(
    name: str, db: Db, caller: CurrentCaller, tenant: Tenant = None
) -> CredentialOut:
    return await service.get(db, name, _tenant(caller, tenant))


@router.delete(
    "/{name}", status_code=status.HTTP_204_NO_CONTENT, openapi_extra=SECURED, responses=NOT_FOUND
)
async def delete_credential(name: str, db: Db, caller: Writer, tenant: Tenant = None) -> Response:
    await service.delete(db, name, _tenant(caller, tenant))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
