"""Choose and start the runner a replica uses, from TOWER_RUNNER (wiring: it joins the
execution package to the gateway's and the egress proxy's containers, which execution
does not know of)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tower.configs.store import ConfigStore
from tower.db.pool import Pool
from tower.errors import Invalid
from tower.execution.runner import Probe, Runner
from tower.execution.simulated import SimulatedRunner
from tower.observability.metrics import TowerMetrics
from tower.settings import Settings, egress_enabled

if TYPE_CHECKING:
    from tower.egress.container import EgressHost
    from tower.execution.docker.client import DockerCalls
    from tower.gateway.container import GatewayHost


@dataclass(frozen=True)
class RunnerHost:
    """The Docker runner's Host (tower/execution/docker_runner.py): the gateway, and the
    egress proxy when this deployment runs one."""

    gateway: GatewayHost
    egress: EgressHost | None = None

    @property
    def parts(self) -> tuple[str, ...]:
        return ("gateway", "egress") if self.egress is not None else ("gateway",)

    async def setup(self, calls: DockerCalls) -> None:
        await self.gateway.setup(calls)
        if self.egress is not None:
            await self.egress.setup(calls)

    def probes(self, client: Any) -> Mapping[str, Probe]:
        found = {"gateway": self.gateway.probe(client)}
        if self.egress is not None:
            found["egress"] = self.egress.probe(client)
        return found


async def build_runner(
    settings: Settings,
    pool: Pool,
    configs: ConfigStore,
    metrics: TowerMetrics,
    auth_slot: int | None = None,
    egress_slot: int | None = None,
) -> Runner:
    """A started runner; its close() stops whatever it started. `auth_slot`: this
    replica's token-check socket, which the gateway must reach (gateway/listener.py);
    `egress_slot`: its egress socket, which the proxy must reach (egress/listener.py)."""
    if settings.tower_runner == "simulated":
        return SimulatedRunner(settings.simulated_run_log)
    if settings.tower_runner == "docker":
        # Imported here so that the Docker SDK loads only where Docker is used.
        from tower.egress.container import EgressHost
        from tower.execution.watched import WatchedRunner
        from tower.gateway.container import GatewayHost

        egress = EgressHost(pool, settings, egress_slot) if egress_enabled(settings) else None
        host = RunnerHost(GatewayHost(pool, settings, auth_slot), egress)
        return await WatchedRunner.start(settings, pool, configs, metrics, host)
    raise Invalid(f"TOWER_RUNNER must be 'docker' or 'simulated', not {settings.tower_runner!r}")
