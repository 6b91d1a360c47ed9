"""Choose and start the runner a replica uses, from TOWER_RUNNER (wiring: it joins the
execution package to the gateway container, which execution does not know of)."""

from __future__ import annotations

from tower.configs.store import ConfigStore
from tower.db.pool import Pool
from tower.errors import Invalid
from tower.execution.runner import Runner
from tower.execution.simulated import SimulatedRunner
from tower.observability.metrics import TowerMetrics
from tower.settings import Settings


async def build_runner(
    settings: Settings,
    pool: Pool,
    configs: ConfigStore,
    metrics: TowerMetrics,
    auth_slot: int | None = None,
) -> Runner:
    """A started runner; its close() stops whatever it started. `auth_slot`: this
    replica's token-check socket, which the gateway must reach (gateway/listener.py)."""
    if settings.tower_runner == "simulated":
        return SimulatedRunner(settings.simulated_run_log)
    if settings.tower_runner == "docker":
        # Imported here so that the Docker SDK loads only where Docker is used.
        from tower.execution.watched import WatchedRunner
        from tower.gateway.container import GatewayHost

        host = GatewayHost(pool, settings, auth_slot)
        return await WatchedRunner.start(settings, pool, configs, metrics, host)
    raise Invalid(f"TOWER_RUNNER must be 'docker' or 'simulated', not {settings.tower_runner!r}")
