"""What the Docker runner asks of the warm pool: a container for one job, then its disposal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tower.execution.runner import ClaimedJob


@dataclass(frozen=True)
class ContainerShape:
    """The per-container choices that decide whether a warm container fits a job."""

    image: str
    memory: str
    cpus: float
    pids_limit: int
    runtime: str
    # The gateway's socket volume (settings.gateway_socket_volume): workers have no network.
    gateway_socket: str
    # The egress proxy's socket volume (settings.egress_socket_volume); None without one.
    egress_socket: str | None = None


@dataclass(frozen=True)
class Slot:
    slot_id: str
    container_id: str
    volume: str
    warm: bool


class SlotSource(Protocol):
    async def take(self, job: ClaimedJob, shape: ContainerShape) -> Slot:
        """A started, ready container for `job`: warm when one of `shape` is ready, else cold.
        Its row is `busy` with the job's id and lease token."""
        ...

    async def retire(self, slot: Slot) -> None:
        """Discard a slot its job is done with, now or once the host has time for it.
        Never raises."""
        ...

    async def discard(self, slot: Slot) -> None:
        """Kill and remove the container and its volume, delete the row. Never raises for
        things already gone."""
        ...
