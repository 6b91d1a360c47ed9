"""Choose and start the runner a replica uses, from TOWER_RUNNER."""

from __future__ import annotations

from tower.errors import Invalid
from tower.execution.runner import Runner
from tower.execution.simulated import SimulatedRunner
from tower.settings import Settings
from tower.state import TowerState


async def build_runner(settings: Settings, state: TowerState) -> Runner:
    """A started runner; its close() stops whatever it started."""
    if settings.tower_runner == "simulated":
        return SimulatedRunner(settings.simulated_run_log)
    if settings.tower_runner == "docker":
        # Imported here so that the Docker SDK loads only where Docker is used.
        from tower.execution.docker.runner import start_docker_runner

        return await start_docker_runner(settings, state)
    raise Invalid(f"TOWER_RUNNER must be 'docker' or 'simulated', not {settings.tower_runner!r}")
