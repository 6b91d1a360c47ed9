"""Who is asking: the caller an API key stands for (its tenant, role and name), and what
each role may do. Plain values, so every layer can take one (docs/tenants.md).

A key belongs to one tenant and has one role:
- admin: everything, every tenant (keys, tenants, configs, any job);
- operator: the configs, and every tenant's resources, read only;
- submit: its tenant's jobs, uploads and credentials, read and write;
- read: its tenant's resources, read only.
TOWER_API_KEY is the bootstrap admin key of the `default` tenant; a tower without it
(loopback only) takes an unkeyed request as that admin too.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

Role = Literal["admin", "operator", "submit", "read"]
ROLES: tuple[Role, ...] = get_args(Role)

DEFAULT_TENANT = "default"
BOOTSTRAP_KEY_NAME = "TOWER_API_KEY"
LOOPBACK_KEY_NAME = "loopback"

# Roles that see every tenant's resources (reads unfiltered).
ALL_TENANTS: frozenset[Role] = frozenset({"admin", "operator"})
# Roles that may change a tenant's jobs, uploads and credentials.
WRITERS: frozenset[Role] = frozenset({"admin", "submit"})
# Roles that may change profiles, engines and templates.
CONFIG_WRITERS: frozenset[Role] = frozenset({"admin", "operator"})


@dataclass(frozen=True)
class Caller:
    """The key a request came with, as tower knows it (never the key itself)."""

    tenant: str
    role: Role
    key_name: str
    # The stored key's id; None for TOWER_API_KEY and an unkeyed loopback request.
    key_id: str | None = None

    @property
    def sees(self) -> str | None:
        """The tenant whose resources this caller may see; None: every tenant's."""
        return None if self.role in ALL_TENANTS else self.tenant

    @property
    def writes(self) -> bool:
        return self.role in WRITERS

    @property
    def writes_configs(self) -> bool:
        return self.role in CONFIG_WRITERS

    def addresses(self, asked: str | None) -> str | None:
        """The tenant a request names (`?tenant=`), else the caller's own; None when it
        names one the caller may not see (which answers 404, as for any resource)."""
        tenant = asked or self.tenant
        return tenant if self.sees in (None, tenant) else None


BOOTSTRAP = Caller(DEFAULT_TENANT, "admin", BOOTSTRAP_KEY_NAME)
LOOPBACK = Caller(DEFAULT_TENANT, "admin", LOOPBACK_KEY_NAME)


class KeyLookup(Protocol):
    """What the web face asks about a presented key (tower/tenants/cache.py answers)."""

    async def caller(self, presented: str) -> Caller | None:
        """The caller a stored key stands for; None when no live key matches."""
        ...

    def revocation(self, key_id: str) -> AbstractContextManager[asyncio.Event]:
        """An event set when the key `key_id` is revoked, while the block runs: what a
        stream or a long poll opened with it ends on."""
        ...
