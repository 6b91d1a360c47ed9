"""Choose the runner a replica uses, from TOWER_RUNNER."""

from __future__ import annotations

from tower.errors import Invalid
from tower.execution.runner import ClaimedJob, Runner, RunOutcome
from tower.execution.simulated import SimulatedRunner
from tower.settings import Settings

DOCKER_PENDING = (
    "Docker execution is not part of this build yet; jobs cannot run an agent. "
    "Set TOWER_RUNNER=simulated to exercise the queue."
)


class DockerUnavailableRunner:
    """Fails every job with a plain explanation, rather than leaving it queued forever."""

    async def run(self, job: ClaimedJob) -> RunOutcome:
        return RunOutcome(False, None, None, DOCKER_PENDING, "error")

    async def close(self) -> None:
        return None


def build_runner(settings: Settings) -> Runner:
    if settings.tower_runner == "simulated":
        return SimulatedRunner(settings.simulated_run_log)
    if settings.tower_runner == "docker":
        return DockerUnavailableRunner()
    raise Invalid(f"TOWER_RUNNER must be 'docker' or 'simulated', not {settings.tower_runner!r}")
