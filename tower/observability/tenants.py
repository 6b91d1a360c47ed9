"""Per-tenant metrics (docs/metrics.md, "Tenants"): labelled by tenant, never by key.

Tenants are made by admins, so their number is bounded by the deployment; even so, at
most MAX_TENANT_SERIES tenants get series of their own (the busiest, in the database
gauges; the first seen, in a replica's counters) and the rest are summed as `_other`,
so a deployment with very many tenants cannot swamp Prometheus.

- Gauges read from PostgreSQL at scrape (aggregate with max()): each tenant's jobs by
  status, and its tokens and cost this UTC month (jobs kept plus what retention rolled
  up into tenant_usage).
- Counters of the replica (sum() across replicas): jobs each tenant submitted here, and
  submits refused by each quota.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from tower.db.statuses import JOB_STATUSES

MAX_TENANT_SERIES = 50
OTHER = "_other"
QUOTAS = ("submits_per_minute", "max_queued", "spend_per_day_usd", "spend_per_month_usd")


@dataclass
class TenantFigures:
    """One scrape's per-tenant figures, already bounded to MAX_TENANT_SERIES tenants."""

    jobs: dict[str, Tally[str]] = field(default_factory=dict)  # tenant -> status -> jobs
    # tenant -> this month's cost, input tokens, output tokens
    used: dict[str, list[float]] = field(default_factory=dict)

    def add_use(self, tenant: str, row: Any) -> None:
        used = self.used.setdefault(tenant, [0.0, 0.0, 0.0])
        for index, column in enumerate(("cost_usd", "input_tokens", "output_tokens")):
            used[index] += float(row[column] or 0)


def tenant_figures(by_status: Sequence[Any], rolled_up: Sequence[Any]) -> TenantFigures:
    """From JOBS_BY_TENANT_STATUS and TENANT_USAGE_THIS_MONTH rows."""
    sizes: Tally[str] = Tally()
    for row in by_status:
        sizes[row["tenant"]] += int(row["jobs"])
    for row in rolled_up:
        sizes[row["tenant"]] += 0
    busiest = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))
    kept = {tenant for tenant, _ in busiest[:MAX_TENANT_SERIES]}

    def label(tenant: str) -> str:
        return tenant if tenant in kept else OTHER

    figures = TenantFigures()
    for row in by_status:
        figures.jobs.setdefault(label(row["tenant"]), Tally())[row["status"]] += int(row["jobs"])
        figures.add_use(label(row["tenant"]), row)
    for row in rolled_up:
        figures.add_use(label(row["tenant"]), row)
    return figures


def tenant_families(figures: TenantFigures) -> Iterator[Metric]:
    jobs = GaugeMetricFamily(
        "tower_tenant_jobs",
        "Jobs in the database, by tenant and status",
        labels=["tenant", "status"],
    )
    for tenant, counts in sorted(figures.jobs.items()):
        for status in JOB_STATUSES:  # every status, zeros included
            jobs.add_metric([tenant, status], counts.get(status, 0))
    yield jobs
    cost = GaugeMetricFamily(
        "tower_tenant_cost_usd_this_month",
        "LLM cost in USD jobs reported this UTC month (by submission), by tenant",
        labels=["tenant"],
    )
    tokens = GaugeMetricFamily(
        "tower_tenant_tokens_this_month",
        "LLM tokens jobs reported this UTC month (by submission), by tenant and kind",
        labels=["tenant", "kind"],
    )
    for tenant, (cost_usd, input_tokens, output_tokens) in sorted(figures.used.items()):
        cost.add_metric([tenant], cost_usd)
        tokens.add_metric([tenant, "input"], input_tokens)
        tokens.add_metric([tenant, "output"], output_tokens)
    yield cost
    yield tokens


class TenantCounters:
    """A replica's counts by tenant: the first MAX_TENANT_SERIES tenants it meets have
    their own label value, later ones count as `_other`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._named: set[str] = set()
        self._submitted = Counter(
            "tower_tenant_jobs_submitted",
            "Jobs accepted by this replica, by tenant (replays excluded)",
            ["tenant"],
            registry=registry,
        )
        self._refused = Counter(
            "tower_tenant_submits_refused",
            "Submits this replica refused for a tenant's quota (429), by tenant and quota",
            ["tenant", "quota"],
            registry=registry,
        )

    def submitted(self, tenant: str) -> None:
        self._submitted.labels(self._label(tenant)).inc()

    def refused(self, tenant: str, quota: str) -> None:
        self._refused.labels(self._label(tenant), quota).inc()

    def _label(self, tenant: str) -> str:
        if tenant in self._named:
            return tenant
        if len(self._named) < MAX_TENANT_SERIES:
            self._named.add(tenant)
            return tenant
        return OTHER
