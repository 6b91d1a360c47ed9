"""/keys (admin only) and /tenants: API keys, and each tenant's quotas and use."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status

from tower.db.ids import SAFE_ID
from tower.tenants import service
from tower.tenants.schemas import KeyCreated, KeyIn, KeyList, Quotas, TenantList, TenantOut
from tower.web.deps import Admin, CurrentCaller, Db, SettingsDep, require_key
from tower.web.openapi import SECURED

router = APIRouter(tags=["tenants"], dependencies=[Depends(require_key)])

ADMIN_ONLY: dict[int | str, dict[str, Any]] = {403: {"description": "Not an admin key"}}
NO_TENANT: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such tenant, or another tenant's"}
}


@router.post(
    "/keys",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=SECURED,
    summary="Make an API key for a tenant (made if new); the key is in this answer only",
    responses=ADMIN_ONLY | {409: {"description": "The tenant has a key of that name"}},
)
async def create_key(body: KeyIn, db: Db, _: Admin) -> KeyCreated:
    return await service.create_key(db, body)


@router.get("/keys", openapi_extra=SECURED, responses=ADMIN_ONLY, summary="Keys, never secrets")
async def list_keys(
    db: Db, _: Admin, tenant: Annotated[str | None, Query(pattern=SAFE_ID)] = None
) -> KeyList:
    return await service.list_keys(db, tenant)


@router.delete(
    "/keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    openapi_extra=SECURED,
    summary="Revoke a key: every replica refuses it within a second",
    responses=ADMIN_ONLY | {404: {"description": "No such key"}},
)
async def revoke_key(key_id: str, db: Db, _: Admin) -> Response:
    await service.revoke_key(db, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/tenants", openapi_extra=SECURED, summary="Tenants this key may see")
async def list_tenants(db: Db, settings: SettingsDep, caller: CurrentCaller) -> TenantList:
    return await service.list_tenants(db, settings, caller.sees)


@router.put(
    "/tenants/{name}",
    openapi_extra=SECURED,
    summary="Set a tenant's quotas (null: the default), making the tenant if new",
    responses=ADMIN_ONLY,
)
async def put_tenant(name: str, body: Quotas, db: Db, settings: SettingsDep, _: Admin) -> TenantOut:
    return await service.put_tenant(db, settings, name, body)


@router.get(
    "/tenants/{name}",
    openapi_extra=SECURED,
    summary="A tenant's quotas and what it uses of them",
    responses=NO_TENANT,
)
async def get_tenant(name: str, db: Db, settings: SettingsDep, caller: CurrentCaller) -> TenantOut:
    return await service.get_tenant(db, settings, name, caller.sees)
