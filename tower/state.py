"""What one running replica holds: built in the app's lifespan, reached through tower.web.deps."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tower.configs.store import ConfigStore
from tower.db.notify import NotifyHub
from tower.db.pool import Pool
from tower.execution.runner import Runner
from tower.jobs.service import JobInserts
from tower.observability.metrics import TowerMetrics
from tower.settings import Settings
from tower.tenants.admission import Quotas
from tower.tenants.cache import KeyCache
from tower.web.streams import StreamLimits


@dataclass
class TowerState:
    settings: Settings
    replica_id: str
    pool: Pool
    hub: NotifyHub
    configs: ConfigStore
    metrics: TowerMetrics
    job_inserts: JobInserts
    # Single statements of the queue's hot path, without per-release reset (see pool.py).
    statement_pool: Pool
    # Runs the claimed jobs; /health asks it about the parts it depends on.
    runner: Runner
    # The open event streams and long polls, capped per replica and per key.
    streams: StreamLimits
    # API keys as this replica knows them (a short cache, dropped on a revoke anywhere).
    keys: KeyCache
    # Tenants' quotas and spend as this replica knows them (dropped when they are set).
    quotas: Quotas
    # Set when the replica begins shutting down: long polls end with a 503 at once, so
    # their clients ask again (another replica, behind a load balancer).
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
