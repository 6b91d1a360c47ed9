"""Keys and tenants: make, list and revoke keys; set and read a tenant's quotas."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from tower.db.ids import SAFE_ID_PATTERN
from tower.db.pool import Pool, transaction
from tower.errors import Conflict, NotFound
from tower.settings import Settings
from tower.tenants import keys, queries, quotas
from tower.tenants.schemas import (
    KeyCreated,
    KeyIn,
    KeyList,
    KeyOut,
    Quotas,
    TenantList,
    TenantOut,
    Use,
)

# --- keys -------------------------------------------------------------------------------


async def create_key(pool: Pool, body: KeyIn) -> KeyCreated:
    """A new key for the tenant (made if it is new): the answer is the only place the
    key itself ever appears; the database keeps its digest."""
    key = keys.new_key()
    values = (keys.new_key_id(), keys.digest(key), body.tenant, body.role, body.name)
    async with transaction(pool) as connection:
        await connection.execute(queries.ENSURE_TENANT, body.tenant)
        row = await connection.fetchrow(queries.INSERT_KEY, *values, keys.hint(key))
        if row is None:
            raise Conflict(f"tenant {body.tenant!r} already has a key named {body.name!r}")
        await connection.execute(queries.NOTIFY_NEW_KEY, row["key_id"])
    return KeyCreated(**_key(row).model_dump(), key=key)


async def list_keys(pool: Pool, tenant: str | None) -> KeyList:
    rows = await pool.fetch(queries.SELECT_KEYS, tenant)
    return KeyList(keys=[_key(row) for row in rows])


async def revoke_key(pool: Pool, key_id: str) -> None:
    """Delete the key; every replica stops taking it as soon as it hears (cache.py)."""
    found = None
    if keys.KEY_ID.match(key_id):
        found = await pool.fetchrow(queries.DELETE_KEY, key_id)
    if found is None:
        raise NotFound(f"no key {key_id[:80]!r}")


def _key(row: Any) -> KeyOut:
    return KeyOut(
        id=row["key_id"],
        tenant=row["tenant"],
        role=row["role"],
        name=row["name"],
        hint=row["hint"],
        created_at=row["created_at"],
    )


# --- tenants ----------------------------------------------------------------------------


async def put_tenant(pool: Pool, settings: Settings, name: str, body: Quotas) -> TenantOut:
    """Set every quota of the tenant (null: the default), making the tenant if new."""
    _check_name(name)
    values = [getattr(body, column) for column in queries.QUOTA_COLUMNS]
    row = await pool.fetchrow(queries.PUT_TENANT, name, *values)
    return _tenant(row, settings, await _use(pool, name))


async def get_tenant(pool: Pool, settings: Settings, name: str, sees: str | None) -> TenantOut:
    """The tenant's quotas; another tenant's caller gets 404, as for any resource."""
    _check_name(name)
    row = None
    if sees is None or sees == name:
        row = await pool.fetchrow(queries.SELECT_TENANT, name)
    if row is None:
        raise NotFound(f"no tenant {name!r}")
    return _tenant(row, settings, await _use(pool, name))


async def list_tenants(pool: Pool, settings: Settings, sees: str | None) -> TenantList:
    """The tenants the caller sees (every one, or its own), each with its use."""
    rows = await pool.fetch(queries.SELECT_TENANTS)
    used = {row["tenant"]: _use_of(row) for row in await pool.fetch(queries.USE, sees)}
    listed = [
        _tenant(row, settings, used.get(row["name"]))
        for row in rows
        if sees is None or row["name"] == sees
    ]
    return TenantList(tenants=listed)


async def _use(pool: Pool, name: str) -> Use | None:
    rows = await pool.fetch(queries.USE, name)
    return _use_of(rows[0]) if rows else None


def _use_of(row: Any) -> Use:
    return Use.model_validate({field: row[field] for field in Use.model_fields})


def _check_name(name: str) -> None:
    if not SAFE_ID_PATTERN.match(name):
        raise NotFound(f"no tenant {name[:80]!r}")


def _tenant(row: Any, settings: Settings, use: Use | None) -> TenantOut:
    applied = quotas.effective(row, quotas.defaults(settings))
    return TenantOut(
        name=row["name"],
        quotas=Quotas(**{name: row[name] for name in queries.QUOTA_COLUMNS}),
        effective=Quotas(**asdict(applied)),
        use=use,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
