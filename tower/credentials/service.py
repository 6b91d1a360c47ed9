"""Storing, listing and deleting credentials; `reveal` is how tower itself (a clone, a
push) gets a secret back, and nothing else returns one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tower.credentials import queries
from tower.credentials.cipher import Cipher, cipher_for
from tower.credentials.schemas import (
    DEFAULT_API_URLS,
    CredentialIn,
    CredentialList,
    CredentialOut,
)
from tower.db.ids import SAFE_ID_PATTERN
from tower.db.pool import Pool
from tower.errors import Conflict, NotFound


@dataclass(frozen=True)
class Credential:
    """A credential with its secret, for tower's own use. Its repr hides the secret."""

    name: str
    kind: str
    username: str | None
    api_url: str | None
    secret: str

    def __repr__(self) -> str:
        return f"Credential(name={self.name!r}, kind={self.kind!r}, secret=<hidden>)"


async def create(pool: Pool, secrets_key: str, body: CredentialIn, tenant: str) -> CredentialOut:
    """Store the tenant's credential: only the tenant's jobs (and keys) use it."""
    cipher = cipher_for(secrets_key)
    sealed = cipher.seal(body.name, body.secret.get_secret_value())
    api_url = body.api_url or DEFAULT_API_URLS.get(body.kind)
    values = (body.name, body.kind, body.username, api_url, sealed, cipher.key_id, tenant)
    async with pool.acquire() as connection:
        row = await connection.fetchrow(queries.INSERT_NEW, *values)
    if row is None:
        raise Conflict(f"credential {body.name!r} already exists (delete it first)")
    return _out(row)


async def list_all(pool: Pool, tenant: str | None) -> CredentialList:
    """One tenant's credentials, or every tenant's (None)."""
    async with pool.acquire() as connection:
        rows = await connection.fetch(queries.SELECT_ALL, tenant)
    return CredentialList(credentials=[_out(row) for row in rows])


async def get(pool: Pool, name: str, tenant: str) -> CredentialOut:
    async with pool.acquire() as connection:
        row = await connection.fetchrow(queries.SELECT_ONE, _checked(name), tenant)
    if row is None:
        raise _missing(name)
    return _out(row)


async def delete(pool: Pool, name: str, tenant: str) -> None:
    async with pool.acquire() as connection:
        if await connection.fetchval(queries.DELETE, _checked(name), tenant) is None:
            raise _missing(name)


async def reveal(pool: Pool, secrets_key: str, name: str, tenant: str) -> Credential:
    """The tenant's credential with its secret."""
    cipher = cipher_for(secrets_key)
    async with pool.acquire() as connection:
        row = await connection.fetchrow(queries.SELECT_SEALED, _checked(name), tenant)
    return _opened(cipher, name, row)


async def reveal_for_job(pool: Pool, secrets_key: str, name: str, job_id: str) -> Credential:
    """The credential a job's repository names, with its secret: its own tenant's."""
    cipher = cipher_for(secrets_key)
    async with pool.acquire() as connection:
        row = await connection.fetchrow(queries.SELECT_SEALED_OF_JOB, _checked(name), job_id)
    return _opened(cipher, name, row)


def _opened(cipher: Cipher, name: str, row: Any) -> Credential:
    if row is None:
        raise _missing(name)
    secret = cipher.open(name, bytes(row["sealed"]), row["key_id"])
    return Credential(row["name"], row["kind"], row["username"], row["api_url"], secret)


def _checked(name: str) -> str:
    if not SAFE_ID_PATTERN.match(name):
        raise _missing(name)
    return name


def _missing(name: str) -> NotFound:
    return NotFound(f"credential {name!r} not found")


def _out(row: Any) -> CredentialOut:
    return CredentialOut(
        tenant=row["tenant"],
        name=row["name"],
        kind=row["kind"],
        username=row["username"],
        api_url=row["api_url"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
