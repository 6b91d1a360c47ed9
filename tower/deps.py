"""Annotated dependency aliases, so routes declare what they need in one word."""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated

from fastapi import Depends, Request

from tower.configs.store import ConfigStore
from tower.db.pool import Pool
from tower.errors import Unauthorized
from tower.observability.metrics import TowerMetrics
from tower.queue.notify import NotifyHub
from tower.settings import Settings
from tower.state import TowerState


async def get_state(request: Request) -> TowerState:
    state: TowerState = request.app.state.tower
    return state


State = Annotated[TowerState, Depends(get_state)]


async def get_settings(state: State) -> Settings:
    return state.settings


async def get_pool(state: State) -> Pool:
    return state.pool


async def get_hub(state: State) -> NotifyHub:
    return state.hub


async def get_configs(state: State) -> ConfigStore:
    return state.configs


async def get_metrics(state: State) -> TowerMetrics:
    return state.metrics


async def require_key(
    request: Request, settings: Annotated[Settings, Depends(get_settings)]
) -> None:
    expected = settings.tower_api_key
    if not expected:
        return
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Unauthorized("Missing or invalid API key")


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_stopping(state: State) -> asyncio.Event:
    return state.stopping


Db = Annotated[Pool, Depends(get_pool)]
Hub = Annotated[NotifyHub, Depends(get_hub)]
Stopping = Annotated[asyncio.Event, Depends(get_stopping)]
Configs = Annotated[ConfigStore, Depends(get_configs)]
Metrics = Annotated[TowerMetrics, Depends(get_metrics)]
CurrentKey = Annotated[None, Depends(require_key)]
