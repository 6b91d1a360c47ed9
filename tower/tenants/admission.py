"""Whether a tenant may submit one more job, by its quotas (docs/tenants.md):

- submits per minute: counted in the submit's own transaction on the tenant's row of
  tenant_rates, which submits of the tenant lock one after another, so the count is
  exact however many arrive at once; past it, 429 with Retry-After (the minute's end);
- queue depth: the tenant's pending jobs, read after that lock in the same transaction;
  past it, 429;
- spend per day and per month: what its jobs reported (cost_usd), by UTC day and month
  of submission; past a cap, 429 naming it, and a job's max_budget_usd defaults to what
  remains (and is held to it).

A tenant with none of these quotas never takes the lock: its submits share commits
(tower/jobs' group commit) as before. The running quota is the claim's (lifecycle.CLAIM).
Each replica keeps a tenant's quotas QUOTA_SECONDS (dropped at once when they are set:
TENANTS_CHANGED); a spend is read afresh at each submit of a tenant with a spend quota
(its jobs of the month), so a job that just reported its cost counts at once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from tower.db.pool import Connection, Pool
from tower.errors import TooManyRequests
from tower.settings import Settings
from tower.tenants import queries
from tower.tenants.quotas import Limits, defaults, effective

QUOTA_SECONDS = 1.0
# A full queue empties as jobs start: ask again a little later.
QUEUE_RETRY_AFTER = 10
# Tenants kept at most; past it, the cache starts afresh.
MAX_TENANTS = 10_000


class OverQuota(TooManyRequests):
    """429 naming the quota, with the seconds until it may pass (Retry-After)."""

    def __init__(self, message: str, retry_after: int, quota: str) -> None:
        super().__init__(message)
        self.retry_after = max(retry_after, 1)
        self.quota = quota


@dataclass(frozen=True)
class Spend:
    today: float
    month: float
    # Seconds until the UTC day and month end.
    day_left: float
    month_left: float


def gated(limits: Limits) -> bool:
    """Whether a submit of the tenant must pass admission (else: the fast path)."""
    return bool(
        limits.submits_per_minute
        or limits.max_queued
        or limits.spend_per_day_usd
        or limits.spend_per_month_usd
    )


class Quotas:
    """This replica's view of tenants' quotas and spend."""

    def __init__(self, pool: Pool, settings: Settings) -> None:
        self._pool = pool
        self._defaults = defaults(settings)
        self._limits: dict[str, tuple[Limits, float]] = {}

    async def limits(self, tenant: str) -> Limits:
        kept = self._limits.get(tenant)
        if kept is not None and kept[1] > time.monotonic():
            return kept[0]
        row = await self._pool.fetchrow(queries.SELECT_QUOTAS, tenant)
        found = effective(row, self._defaults) if row is not None else self._defaults
        _keep(self._limits, tenant, found, QUOTA_SECONDS)
        return found

    async def spend(self, tenant: str) -> Spend:
        return spend_of(await self._pool.fetchrow(queries.SPEND, tenant))

    def forget(self, tenant: str) -> None:
        """TENANTS_CHANGED: the tenant's quotas were set."""
        self._limits.pop(tenant, None)

    def clear(self) -> None:
        """The LISTEN connection came back: notices may have been missed."""
        self._limits.clear()


def _keep(cache: dict[str, Any], tenant: str, value: Any, seconds: float) -> None:
    if len(cache) >= MAX_TENANTS:
        cache.clear()
    cache[tenant] = (value, time.monotonic() + seconds)


def spend_of(row: Any) -> Spend:
    return Spend(
        float(row["spend_today_usd"]),
        float(row["spend_this_month_usd"]),
        float(row["day_left"]),
        float(row["month_left"]),
    )


def budget(tenant: str, limits: Limits, spent: Spend, asked: float | None) -> float | None:
    """The max_budget_usd a new job of the tenant runs with: what remains of its spend
    caps, or what it asked if less; None without a spend cap (the job's own, if any).
    Raises OverQuota, naming the cap, when nothing remains."""
    remaining: list[float] = []
    for cap, used, window, left, name in (
        (limits.spend_per_day_usd, spent.today, "today", spent.day_left, "spend_per_day_usd"),
        (
            limits.spend_per_month_usd,
            spent.month,
            "this month",
            spent.month_left,
            "spend_per_month_usd",
        ),
    ):
        if not cap:
            continue
        if used >= cap:
            raise OverQuota(
                f"tenant {tenant!r} spent ${used:.2f} {window}: its {name} is ${cap:.2f}"
                " (the window is a UTC day or month)",
                math.ceil(left),
                name,
            )
        remaining.append(cap - used)
    if not remaining:
        return asked
    left_over = math.floor(min(remaining) * 100) / 100 or 0.01
    return min(asked, left_over) if asked else left_over


async def admit(connection: Connection, tenant: str, limits: Limits) -> None:
    """Count the submit and check the queue, in the transaction that inserts the job
    (rolled back, count included, when this raises)."""
    if limits.submits_per_minute or limits.max_queued:
        row = await connection.fetchrow(queries.COUNT_SUBMIT, tenant)
        if limits.submits_per_minute and row["submits"] > limits.submits_per_minute:
            raise OverQuota(
                f"tenant {tenant!r} submitted {limits.submits_per_minute} jobs this minute:"
                f" its submits_per_minute is {limits.submits_per_minute}",
                row["seconds_left"],
                "submits_per_minute",
            )
    if limits.max_queued:
        queued = await connection.fetchval(queries.QUEUED, tenant)
        if queued >= limits.max_queued:
            raise OverQuota(
                f"tenant {tenant!r} has {queued} jobs waiting: its max_queued is"
                f" {limits.max_queued}",
                QUEUE_RETRY_AFTER,
                "max_queued",
            )
