"""GET /metrics: Prometheus text, every name prefixed `tower_`. See docs/metrics.md.

Two kinds of series, chosen per metric so that they are right under several replicas:
- Gauges read from PostgreSQL at scrape time (jobs by status, queue depth and oldest
  age, pool slots, webhook deliveries by status): the database is the truth, so every
  replica reports the same values. Aggregate them with max(), never sum().
- Counters and histograms kept by the replica that did the thing (jobs submitted and
  finished, claim latency, run duration, warm/cold acquisitions, webhook attempts,
  tokens, cost): each event is counted once, by one replica, so sum() across replicas
  is the total. They restart from zero with their process, as Prometheus expects.
- One replica gauge, the long-lived requests it holds open: sum() is the fleet's.

Each app has its own CollectorRegistry, never the process-global one: several towers
run in one test process, and a global registry would mix (or reject) their series.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Literal, get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tower.db.pool import Pool
from tower.db.statuses import JOB_STATUSES, TERMINAL_STATUSES
from tower.db.tables import DELIVERY_STATUSES, POOL_STATUSES
from tower.observability import queries
from tower.observability.tenants import (
    TenantCounters,
    TenantFigures,
    tenant_families,
    tenant_figures,
)

# Seconds. Claims are fast when workers are free and minutes when the queue is deep.
CLAIM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
# Seconds. A warm job's phases take milliseconds; a run or a cold start, seconds or more.
PHASE_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800,
)  # fmt: skip
# Where a job's time goes on its replica, in order (docs/metrics.md, "Job phases"). `fill`
# is the warm pool's creation of a container ahead of any job: off every job's path.
JOB_PHASES = (
    "claim", "stage", "plan", "take", "create", "start", "ready", "attach", "bundle", "run",
    "collect", "finish", "remove", "fill",
)  # fmt: skip
RUN_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
ATTEMPT_OUTCOMES = ("delivered", "retry", "failed", "stopped", "refused")
# The gateway's provider routes (tower/gateway/providers.py names the same three).
GATEWAY_PROVIDERS = ("anthropic", "openai", "gemini")
# Why a reported end of an egress request was refused (tower/egress/service.py ended).
EGRESS_END_REFUSALS = ("forged", "not_open")
StreamKind = Literal["wait", "events"]
STREAM_KINDS: tuple[StreamKind, ...] = get_args(StreamKind)


@dataclass(frozen=True)
class DatabaseSnapshot:
    jobs_by_status: dict[str, int]
    oldest_pending_age_seconds: float
    slots_by_status: dict[str, int]
    deliveries_by_status: dict[str, int]
    tenants: TenantFigures | None = None

    @property
    def depth(self) -> int:
        return self.jobs_by_status.get("pending", 0)


class TowerMetrics:
    """One replica's metrics: its counters, and the database gauges read per scrape."""

    def __init__(self, replica_id: str) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        info = Info("tower", "This tower replica", registry=registry)
        info.info({"replica": replica_id, "version": version("parpaing")})
        self._submitted = Counter(
            "tower_jobs_submitted",
            "Jobs accepted by this replica (replays excluded)",
            registry=registry,
        )
        self._finished = Counter(
            "tower_jobs_finished",
            "Jobs this replica made terminal, by status",
            ["status"],
            registry=registry,
        )
        self._claims_contended = Counter(
            "tower_claims_contended",
            "Claims that skipped a tenant with a running quota another claim held",
            registry=registry,
        )
        self._claim_latency = Histogram(
            "tower_claim_latency_seconds",
            "Time from a job becoming claimable to its claim by this replica",
            buckets=CLAIM_BUCKETS,
            registry=registry,
        )
        self._run_duration = Histogram(
            "tower_job_run_duration_seconds",
            "Run time of the jobs this replica ran, by status",
            ["status"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self._phases = Histogram(
            "tower_job_phase_seconds",
            "Time spent in each phase of the jobs this replica ran, by phase",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=registry,
        )
        self._acquisitions = Counter(
            "tower_pool_acquisitions",
            "Worker containers taken for a job: warm or cold",
            ["kind"],
            registry=registry,
        )
        self._webhook_attempts = Counter(
            "tower_webhook_attempts",
            "Webhook HTTP attempts made by this replica, by outcome",
            ["outcome"],
            registry=registry,
        )
        self._tokens = Counter(
            "tower_tokens",
            "LLM tokens used by the jobs this replica ran",
            ["kind"],
            registry=registry,
        )
        self._cost = Counter(
            "tower_cost_usd", "LLM cost in USD of the jobs this replica ran", registry=registry
        )
        self._open_streams = Gauge(
            "tower_open_streams",
            "Long-lived requests this replica holds open: /wait long polls and event streams",
            ["kind"],
            registry=registry,
        )
        self._gateway_refused = Counter(
            "tower_gateway_refused",
            "Calls of running jobs the gateway refused as not inference, by provider",
            ["provider"],
            registry=registry,
        )
        # By profile: a bounded label, the operator's configs (docs/egress.md).
        self._egress = Counter(
            "tower_egress_requests",
            "Requests through the egress proxy this replica decided, by profile and decision",
            ["profile", "decision"],
            registry=registry,
        )
        self._egress_bytes = Counter(
            "tower_egress_bytes",
            "Bytes of the egress proxy's allowed requests, as they ended, by profile",
            ["profile"],
            registry=registry,
        )
        self._egress_ends_refused = Counter(
            "tower_egress_ends_refused",
            "Reported ends of egress requests this replica refused: forged (a tag tower did "
            "not make) or not open (ended already)",
            ["reason"],
            registry=registry,
        )
        self._docker_host = Gauge(
            "tower_docker_host_info",
            "The Docker daemon (its ID) this replica runs jobs on: 1 for it, none when unknown",
            ["docker_host"],
            registry=registry,
        )
        # By tenant (tower/observability/tenants.py): submits, and refusals by quota.
        self.tenants = TenantCounters(registry)
        self._zero_series()

    def _zero_series(self) -> None:
        # Every label value shows from the start, so rate() sees the first increment.
        for status in TERMINAL_STATUSES:
            self._finished.labels(status)
        for status in ("completed", "failed"):
            self._run_duration.labels(status)
        for kind in ("warm", "cold"):
            self._acquisitions.labels(kind)
        for phase in JOB_PHASES:
            self._phases.labels(phase)
        for outcome in ATTEMPT_OUTCOMES:
            self._webhook_attempts.labels(outcome)
        for kind in ("input", "output"):
            self._tokens.labels(kind)
        for kind in STREAM_KINDS:
            self._open_streams.labels(kind)
        for provider in GATEWAY_PROVIDERS:
            self._gateway_refused.labels(provider)
        for reason in EGRESS_END_REFUSALS:
            self._egress_ends_refused.labels(reason)

    # --- events, counted by the replica where they happen ----------------------------

    def job_submitted(self) -> None:
        self._submitted.inc()

    def job_finished(self, status: str, count: int = 1) -> None:
        self._finished.labels(status).inc(count)

    def claim_contended(self) -> None:
        self._claims_contended.inc()

    def job_claimed(self, queued_seconds: float) -> None:
        self._claim_latency.observe(max(queued_seconds, 0.0))

    def job_ran(self, status: str, seconds: float, usage: Mapping[str, Any] | None) -> None:
        self._run_duration.labels(status).observe(seconds)
        for kind in ("input", "output"):
            self._tokens.labels(kind).inc(_non_negative(usage, f"{kind}_tokens"))
        self._cost.inc(_non_negative(usage, "cost_usd"))

    def job_phase(self, phase: str, seconds: float) -> None:
        """Time one job spent in `phase` (one of JOB_PHASES). Safe from any thread."""
        self._phases.labels(phase).observe(max(seconds, 0.0))

    def timing(self, phase: str) -> AbstractContextManager[object]:
        """Counts the block's time as `phase`."""
        return self._phases.labels(phase).time()

    def container_taken(self, warm: bool) -> None:
        self._acquisitions.labels("warm" if warm else "cold").inc()

    def webhook_attempt(self, outcome: str) -> None:
        self._webhook_attempts.labels(outcome).inc()

    def gateway_refused(self, provider: str) -> None:
        """The gateway refused a running job's call to `provider` (one of
        GATEWAY_PROVIDERS, or "other") as not an inference endpoint."""
        self._gateway_refused.labels(provider).inc()

    def egress_decided(self, profile: str, allowed: bool) -> None:
        self._egress.labels(profile, "allowed" if allowed else "refused").inc()

    def egress_ended(self, profile: str, moved: int) -> None:
        self._egress_bytes.labels(profile).inc(max(moved, 0))

    def egress_ends_refused(self, reason: str, count: int) -> None:
        """`count` reported ends refused for `reason` (EGRESS_END_REFUSALS)."""
        if count:
            self._egress_ends_refused.labels(reason).inc(count)

    def holding(self, kind: StreamKind) -> AbstractContextManager[object]:
        """Counts a request of `kind` as open while the block runs."""
        return self._open_streams.labels(kind).track_inprogress()

    def docker_host(self, host: str | None) -> None:
        """Say which Docker host this replica is on (read at scrape: it may change when
        the daemon is replaced, or be unknown while it does not answer)."""
        self._docker_host.clear()
        if host is not None:
            self._docker_host.labels(host).set(1)

    # --- scrape ---------------------------------------------------------------------

    async def render(self, pool: Pool) -> bytes:
        snapshot = await read_database(pool)
        return generate_latest(_Scrape(self.registry, snapshot))


def _non_negative(usage: Mapping[str, Any] | None, key: str) -> float:
    """A usage figure as a counter increment: numbers only, never negative."""
    value = (usage or {}).get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return max(float(value), 0.0)


async def read_database(pool: Pool) -> DatabaseSnapshot:
    # One snapshot, so the figures of one scrape agree with each other.
    async with (
        pool.acquire() as connection,
        connection.transaction(isolation="repeatable_read", readonly=True),
    ):
        jobs = await connection.fetch(queries.JOBS_BY_STATUS)
        slots = await connection.fetch(queries.SLOTS_BY_STATUS)
        deliveries = await connection.fetch(queries.DELIVERIES_BY_STATUS)
        by_tenant = await connection.fetch(queries.JOBS_BY_TENANT_STATUS)
        rolled_up = await connection.fetch(queries.TENANT_USAGE_THIS_MONTH)
    oldest = next((float(r["oldest_age_seconds"]) for r in jobs if r["status"] == "pending"), 0.0)
    return DatabaseSnapshot(
        {str(row["status"]): int(row["jobs"]) for row in jobs},
        oldest,
        {str(row["status"]): int(row["slots"]) for row in slots},
        {str(row["status"]): int(row["deliveries"]) for row in deliveries},
        tenant_figures(by_tenant, rolled_up),
    )


class _Scrape(Collector):
    """The registry's own metrics plus the database figures of this one scrape."""

    def __init__(self, registry: CollectorRegistry, snapshot: DatabaseSnapshot) -> None:
        self._registry = registry
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()
        yield from _database_families(self._snapshot)


def _by_status(
    name: str, documentation: str, statuses: tuple[str, ...], counts: dict[str, int]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["status"])
    for status in statuses:  # every status, zeros included, so series never vanish
        family.add_metric([status], counts.get(status, 0))
    return family


def _database_families(snapshot: DatabaseSnapshot) -> Iterator[Metric]:
    yield _by_status(
        "tower_jobs", "Jobs in the database, by status", JOB_STATUSES, snapshot.jobs_by_status
    )
    yield GaugeMetricFamily("tower_queue_depth", "Jobs waiting to be claimed", value=snapshot.depth)
    yield GaugeMetricFamily(
        "tower_queue_oldest_age_seconds",
        "Age of the oldest job waiting to be claimed (0 when none waits)",
        value=snapshot.oldest_pending_age_seconds,
    )
    yield GaugeMetricFamily(
        "tower_pool_ready",
        "Warm worker containers ready for a job, all Docker hosts",
        value=snapshot.slots_by_status.get("ready", 0),
    )
    yield _by_status(
        "tower_pool_slots",
        "Worker container slots, by status",
        POOL_STATUSES,
        snapshot.slots_by_status,
    )
    yield _by_status(
        "tower_webhook_deliveries",
        "Webhook deliveries in the outbox, by status",
        DELIVERY_STATUSES,
        snapshot.deliveries_by_status,
    )
    if snapshot.tenants is not None:
        yield from tenant_families(snapshot.tenants)
