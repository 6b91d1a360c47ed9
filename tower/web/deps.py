"""Annotated dependency aliases, so routes declare what they need in one word.

What a replica holds (tower/state.py's TowerState) is wiring above every domain: a
dependency here reads one of its fields by name instead of importing it, so domains'
routes can use these without a domain importing the app. A domain's own held objects
(the config store, the job inserter) get their aliases in that domain, with `held`.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from tower.db.notify import NotifyHub
from tower.db.pool import Pool
from tower.errors import Unauthorized
from tower.observability.metrics import TowerMetrics
from tower.settings import Settings


def held(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A dependency answering the replica's field `name` (set up by the app's lifespan).
    A coroutine: FastAPI would run a plain function on its thread pool, per request."""

    async def get(request: Request) -> Any:
        return getattr(request.app.state.tower, name)

    get.__name__ = f"get_{name}"
    return get


SettingsDep = Annotated[Settings, Depends(held("settings"))]
Db = Annotated[Pool, Depends(held("pool"))]
Hub = Annotated[NotifyHub, Depends(held("hub"))]
Stopping = Annotated[asyncio.Event, Depends(held("stopping"))]
Metrics = Annotated[TowerMetrics, Depends(held("metrics"))]


async def require_key(request: Request, settings: SettingsDep) -> None:
    expected = settings.tower_api_key.get_secret_value()
    if not expected:
        return
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    # Constant time in the key's content: a mismatch does not tell how much of it was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Unauthorized("Missing or invalid API key")


CurrentKey = Annotated[None, Depends(require_key)]
