"""What one running replica holds: built in the app's lifespan, reached through tower.deps."""

from __future__ import annotations

from dataclasses import dataclass

from tower.configs.store import ConfigStore
from tower.db.pool import Pool
from tower.jobs.service import JobInserts
from tower.observability.metrics import TowerMetrics
from tower.queue.notify import NotifyHub
from tower.settings import Settings


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
