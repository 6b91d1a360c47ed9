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

from tower.access import BOOTSTRAP, LOOPBACK, Caller, KeyLookup
from tower.db.notify import NotifyHub
from tower.db.pool import Pool
from tower.errors import Forbidden, Unauthorized
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


# Where the request gate leaves the caller it found, so a route does not look again.
CALLER_SCOPE = "parpaing.caller"
INVALID_KEY = "Missing or invalid API key"


async def require_key(request: Request, settings: SettingsDep) -> Caller:
    """Who the request comes from (tower/access.py), or 401: TOWER_API_KEY is the
    bootstrap admin; another key must be a live stored one; no key at all is the
    loopback admin on a tower without TOWER_API_KEY, refused on one with it."""
    known: Caller | None = request.scope.get(CALLER_SCOPE)
    if known is None:
        known = request.scope[CALLER_SCOPE] = await _authenticate(request, settings)
    return known


async def _authenticate(request: Request, settings: Settings) -> Caller:
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    presented = presented if scheme.lower() == "bearer" else ""
    expected = settings.tower_api_key.get_secret_value()
    if not presented:
        if expected:
            raise Unauthorized(INVALID_KEY)
        return LOOPBACK
    # Constant time in the key's content: a mismatch does not tell how much of it was right.
    if expected and hmac.compare_digest(presented.encode(), expected.encode()):
        return BOOTSTRAP
    keys: KeyLookup | None = getattr(getattr(request.app.state, "tower", None), "keys", None)
    found = await keys.caller(presented) if keys is not None else None
    if found is None:
        raise Unauthorized(INVALID_KEY)
    return found


def _with_role(allowed: Callable[[Caller], bool], refusal: str) -> Callable[..., Awaitable[Caller]]:
    async def check(caller: Annotated[Caller, Depends(require_key)]) -> Caller:
        if not allowed(caller):
            raise Forbidden(refusal.format(role=caller.role))
        return caller

    return check


CurrentCaller = Annotated[Caller, Depends(require_key)]
# A key that may change its tenant's jobs, uploads and credentials (admin, submit).
Writer = Annotated[
    Caller, Depends(_with_role(lambda c: c.writes, "A {role} key cannot change anything here"))
]
# A key that may change profiles, engines and templates (admin, operator).
ConfigWriter = Annotated[
    Caller,
    Depends(_with_role(lambda c: c.writes_configs, "A {role} key cannot change configs")),
]
Admin = Annotated[
    Caller, Depends(_with_role(lambda c: c.role == "admin", "Only an admin key may do this"))
]
