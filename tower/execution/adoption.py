"""What a runner needs to take over a job whose tower died while its container ran on.

A replica on the same Docker host adopts such a job (tower/queue/adoption.py): the job
gets a new lease token in the database (lifecycle.ADOPT), then the runner follows the
container's output again, from its log, and finishes the job from the worker's result.
Only the Docker runner can (tower/execution/docker_runner.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from tower.execution.runner import ClaimedJob, Output, RunOutcome


@dataclass(frozen=True)
class Adoption:
    """An adopted job: `job` holds the new lease token and the same attempt (its gateway
    token is unknown here: the agent in the container holds it); `started_at` is when it
    was claimed (epoch seconds: its timeout counts from there); `stored` the bytes of
    each stream its log already holds."""

    job: ClaimedJob
    slot_id: str
    container_id: str
    started_at: float
    stored: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class Adopting(Protocol):
    """A runner whose jobs outlive their tower on a Docker host."""

    async def docker_host(self) -> str | None:
        """The ID of the Docker daemon this runner starts containers on (None: unknown)."""
        ...

    async def container_running(self, container_id: str) -> bool:
        """Whether the container runs on this host; raises TowerError if Docker does
        not answer."""
        ...

    async def resume(self, adopted: Adoption, output: Output) -> RunOutcome:
        """Follow the adopted job's container to its end, as `Runner.run` would."""
        ...
