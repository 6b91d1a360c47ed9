"""/profiles, /engines and /configs: parse, call the service, return."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from tower.configs import service
from tower.configs.schemas import ConfigBody, ConfigNames, ConfigOut, EngineList, ProfileList
from tower.configs.store import ConfigStore
from tower.web.deps import ConfigWriter, Db, held
from tower.web.openapi import SECURED

Configs = Annotated[ConfigStore, Depends(held("configs"))]

router = APIRouter(tags=["configs"])


@router.get("/profiles")
async def list_profiles(configs: Configs) -> ProfileList:
    return service.list_profiles(configs)


@router.get("/engines")
async def list_engines(configs: Configs) -> EngineList:
    """`available` means the engine's config is valid; the worker image is not checked yet."""
    return service.list_engines(configs)


@router.get("/configs/{type}")
async def list_configs(type: str, db: Db) -> ConfigNames:
    return await service.list_config_names(db, type)


@router.get("/configs/{type}/{name}")
async def get_config(type: str, name: str, db: Db) -> ConfigOut:
    return await service.get_config(db, type, name)


@router.post("/configs/{type}/{name}", status_code=status.HTTP_201_CREATED, openapi_extra=SECURED)
async def create_config(
    type: str, name: str, body: ConfigBody, db: Db, configs: Configs, _: ConfigWriter
) -> ConfigOut:
    return await service.create_config(db, configs, type, name, body.content)


@router.put("/configs/{type}/{name}", openapi_extra=SECURED)
async def put_config(
    type: str, name: str, body: ConfigBody, db: Db, configs: Configs, _: ConfigWriter
) -> ConfigOut:
    return await service.put_config(db, configs, type, name, body.content)


@router.delete(
    "/configs/{type}/{name}", status_code=status.HTTP_204_NO_CONTENT, openapi_extra=SECURED
)
async def delete_config(
    type: str, name: str, db: Db, configs: Configs, _: ConfigWriter
) -> Response:
    await service.delete_config(db, configs, type, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
