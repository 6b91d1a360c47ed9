"""What the keys and tenants API accepts and answers. A key's secret appears in one
answer only, the one that made it (KeyCreated)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from tower.access import Role
from tower.db.ids import SAFE_ID

TenantName = Annotated[str, Field(pattern=SAFE_ID, description="letters, digits, _ and -")]
KeyName = Annotated[
    str, Field(pattern=SAFE_ID, description="who holds the key; recorded on its jobs")
]


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: TenantName
    role: Role
    name: KeyName


class KeyOut(BaseModel):
    id: str
    tenant: str
    role: Role
    name: str
    hint: str = Field(description="the key's first characters, to tell keys apart")
    created_at: datetime


class KeyCreated(KeyOut):
    key: str = Field(description="the key itself: shown this once, never again")


class KeyList(BaseModel):
    keys: list[KeyOut]


# The bounds of each quota; 0 is "no limit", null "the deployment's default".
Count = Annotated[int, Field(ge=0, le=10_000_000)]
Dollars = Annotated[float, Field(ge=0, le=1_000_000_000)]


class Quotas(BaseModel):
    """A tenant's quotas. null: the deployment's default (TENANT_* settings); 0: no limit."""

    model_config = ConfigDict(extra="forbid")

    max_running: Count | None = Field(None, description="jobs running at once")
    submits_per_minute: Count | None = Field(None, description="submits per minute")
    spend_per_day_usd: Dollars | None = Field(None, description="USD per UTC day")
    spend_per_month_usd: Dollars | None = Field(None, description="USD per UTC month")
    max_queued: Count | None = Field(None, description="jobs waiting in the queue")
    share: Annotated[float, Field(gt=0, le=1000)] | None = Field(
        None, description="weight in fair scheduling (a tenant with share 2 runs twice as many)"
    )


class Use(BaseModel):
    """What the tenant uses now; days and months are UTC, jobs counted by submission."""

    running: int
    queued: int
    submits_this_minute: int
    jobs_today: int
    jobs_this_month: int
    input_tokens_this_month: int
    output_tokens_this_month: int
    spend_today_usd: float
    spend_this_month_usd: float


class TenantOut(BaseModel):
    name: str
    quotas: Quotas = Field(description="as set: null where the default applies")
    effective: Quotas = Field(description="what applies now, defaults filled in")
    use: Use | None = None
    created_at: datetime
    updated_at: datetime


class TenantList(BaseModel):
    tenants: list[TenantOut]
