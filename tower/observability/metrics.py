"""GET /metrics: Prometheus text, every name prefixed `tower_`.

Each app has its own CollectorRegistry, never the process-global one: several towers
run in one test process, and a global registry would mix (or reject) their series.
Queue figures are read from PostgreSQL at scrape time, because the database is the
truth across replicas: any replica reports the same queue.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Info, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tower.db.pool import Pool
from tower.db.tables import JOB_STATUSES
from tower.deps import State
from tower.observability import queries

router = APIRouter(tags=["ops"])


@dataclass(frozen=True)
class QueueSnapshot:
    jobs_by_status: dict[str, int]
    oldest_pending_age_seconds: float

    @property
    def depth(self) -> int:
        return self.jobs_by_status.get("pending", 0)


class TowerMetrics:
    """One replica's metrics. Process-lifetime counters register on `registry`."""

    def __init__(self, replica_id: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        info = Info("tower", "This tower replica", registry=self.registry)
        info.info({"replica": replica_id, "version": version("parpaing")})

    async def render(self, pool: Pool) -> bytes:
        snapshot = await read_queue(pool)
        return generate_latest(_Scrape(self.registry, snapshot))


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request, state: State) -> Response:
    body = await metrics_of(request, state.replica_id).render(state.pool)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def metrics_of(request: Request, replica_id: str) -> TowerMetrics:
    """The app's TowerMetrics, made on first use (no await in between: no race)."""
    existing: TowerMetrics | None = getattr(request.app.state, "metrics", None)
    if existing is None:
        existing = TowerMetrics(replica_id)
        request.app.state.metrics = existing
    return existing


async def read_queue(pool: Pool) -> QueueSnapshot:
    async with pool.acquire() as connection:
        rows = await connection.fetch(queries.JOBS_BY_STATUS)
    counts = {str(row["status"]): int(row["jobs"]) for row in rows}
    oldest = next((float(r["oldest_age_seconds"]) for r in rows if r["status"] == "pending"), 0.0)
    return QueueSnapshot(counts, oldest)


class _Scrape(Collector):
    """The registry's own metrics plus the queue figures of this one scrape."""

    def __init__(self, registry: CollectorRegistry, snapshot: QueueSnapshot) -> None:
        self._registry = registry
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()
        yield from _queue_families(self._snapshot)


def _queue_families(snapshot: QueueSnapshot) -> Iterator[Metric]:
    jobs = GaugeMetricFamily("tower_jobs", "Jobs in the database, by status", labels=["status"])
    for status in JOB_STATUSES:  # every status, zeros included, so series never vanish
        jobs.add_metric([status], snapshot.jobs_by_status.get(status, 0))
    yield jobs
    yield GaugeMetricFamily("tower_queue_depth", "Jobs waiting to be claimed", value=snapshot.depth)
    yield GaugeMetricFamily(
        "tower_queue_oldest_age_seconds",
        "Age of the oldest job waiting to be claimed (0 when none waits)",
        value=snapshot.oldest_pending_age_seconds,
    )
