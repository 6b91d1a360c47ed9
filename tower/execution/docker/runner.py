"""Placeholder until the Docker runner lands: every job fails with a plain explanation."""

from __future__ import annotations

from tower.execution.runner import ClaimedJob, RunOutcome
from tower.settings import Settings
from tower.state import TowerState

DOCKER_PENDING = (
    "Docker execution is not part of this build yet; jobs cannot run an agent. "
    "Set TOWER_RUNNER=simulated to exercise the queue."
)


class DockerUnavailableRunner:
    async def run(self, job: ClaimedJob) -> RunOutcome:
        return RunOutcome(False, None, None, DOCKER_PENDING, "error")

    async def close(self) -> None:
        return None


async def start_docker_runner(settings: Settings, state: TowerState) -> DockerUnavailableRunner:
    return DockerUnavailableRunner()
