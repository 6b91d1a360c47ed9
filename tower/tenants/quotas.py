"""A tenant's quotas as they apply: its own where set, else the deployment's defaults
(the TENANT_* settings). 0 means no limit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from tower.settings import Settings


@dataclass(frozen=True)
class Limits:
    max_running: int
    submits_per_minute: int
    spend_per_day_usd: float
    spend_per_month_usd: float
    max_queued: int
    share: float


NAMES = tuple(field.name for field in fields(Limits))


def defaults(settings: Settings) -> Limits:
    return Limits(
        max_running=settings.tenant_max_running,
        submits_per_minute=settings.tenant_submits_per_minute,
        spend_per_day_usd=settings.tenant_spend_per_day_usd,
        spend_per_month_usd=settings.tenant_spend_per_month_usd,
        max_queued=settings.tenant_max_queued,
        share=settings.tenant_share,
    )


def effective(row: Mapping[str, Any], fallback: Limits) -> Limits:
    """The row's quotas, each NULL one replaced by the default."""
    return Limits(
        **{name: row[name] if row[name] is not None else getattr(fallback, name) for name in NAMES}
    )
