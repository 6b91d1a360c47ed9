"""One reconcile pass of the warm pool: make this host's rows and containers agree.

Rows and containers are read in an order that makes each rule safe against work in
flight: a row always exists before its container (reservation or cold insert), so a
container listed *before* the rows are read and still without a row really has none;
a row that looks container-less is confirmed by a second listing taken *after* the rows
were read. Deletes of ready slots re-check their status in SQL, so a slot being taken
is never removed under its job.

Only one replica per Docker host runs a pass at a time (a session advisory lock held on
the pass's connection); the others skip the round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields

import docker
import requests
from docker.errors import DockerException

from tower.db.pool import Connection, Pool
from tower.execution.docker.client import DockerCalls
from tower.execution.docker.containers import DockerFailure, WorkerInfo, remove_worker
from tower.execution.docker.hardening import ROLE_LABEL, SLOT_LABEL, WORKER_ROLE
from tower.execution.pool import queries as q
from tower.settings import Settings

log = logging.getLogger(__name__)

# A reservation older than this never got its container (its creator died or hung);
# creating a worker takes about a second, its ready wait at most 30 s.
START_DEADLINE = 120.0
ENDED_STATES = frozenset({"exited", "dead"})


@dataclass(frozen=True)
class Reconciled:
    """What one pass removed, by rule."""

    rows_without_container: int = 0
    containers_without_row: int = 0
    volumes_without_row: int = 0
    exited_ready: int = 0
    idle: int = 0
    orphaned_busy: int = 0
    stale_starting: int = 0

    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))


@dataclass(frozen=True)
class Limits:
    """Ages (seconds) past which a ready slot is idle and a reservation stale."""

    max_idle: float
    start_deadline: float


@dataclass(frozen=True)
class Inventory:
    """This pool's worker containers and bundle volumes on the daemon, by slot id."""

    containers: dict[str, WorkerInfo]
    volume_slots: set[str]


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        db: Pool,
        calls: DockerCalls,
        docker_host: str,
        scope: Mapping[str, str],
    ) -> None:
        self._settings = settings
        self._db = db
        self._calls = calls
        self._host = docker_host
        self._scope = dict(scope)

    async def run_once(self) -> Reconciled | None:
        """One pass; None when another replica is reconciling this host right now."""
        limits = Limits(self._settings.pool_max_idle, START_DEADLINE)
        async with self._db.acquire() as connection:
            if not await q.try_reconcile_lock(connection, self._host):
                return None
            try:
                done = await self._pass(connection, limits)
            finally:
                await q.reconcile_unlock(connection, self._host)
        if done.total():
            log.info("pool reconcile on %s: %s", self._host[:12], done)
        return done

    async def drain_once(self) -> Reconciled:
        """A pass by the last replica on the host: nobody else will take a ready slot or
        finish a reservation, so every one goes (busy slots of running jobs stay). It waits
        for a pass still under way elsewhere rather than skip."""
        async with self._db.acquire() as connection:
            await q.reconcile_lock(connection, self._host)
            try:
                return await self._pass(connection, Limits(max_idle=0, start_deadline=0))
            finally:
                await q.reconcile_unlock(connection, self._host)

    async def _pass(self, connection: Connection, limits: Limits) -> Reconciled:
        seen = await self._inventory()
        rows = await q.host_rows(connection, self._host)
        row_ids = {row.slot_id for row in rows}
        strays = [w for slot, w in seen.containers.items() if slot not in row_ids]
        stray_volumes = seen.volume_slots - row_ids - set(seen.containers)
        gone = await q.delete_gone(connection, self._host, await self._confirm_gone(rows, seen))
        exited = await q.delete_exited_ready(connection, self._host, _not_running(rows, seen))
        idle = await q.delete_idle(connection, self._host, limits.max_idle)
        orphaned = await q.delete_orphaned_busy(connection, self._host)
        stale = await q.delete_stale_starting(connection, self._host, limits.start_deadline)
        await self._remove([(w.container_id, w.slot_id) for w in strays])
        await self._remove([(None, slot) for slot in stray_volumes])
        await self._remove([(row.container_id, row.slot_id) for row in gone])
        await self._remove(_pairs(exited + idle + orphaned + stale))
        return Reconciled(
            len(gone), len(strays), len(stray_volumes), len(exited), len(idle),
            len(orphaned), len(stale),
        )  # fmt: skip

    async def _inventory(self) -> Inventory:
        return await self._calls(pool_inventory, self._scope)

    async def _confirm_gone(self, rows: list[q.SlotRow], seen: Inventory) -> list[str]:
        """Rows that had a container missing from the first listing and from a second one
        taken after the rows were read (a container made meanwhile shows up there)."""
        missing = [r.slot_id for r in rows if r.container_id and r.slot_id not in seen.containers]
        if not missing:
            return []
        again = await self._inventory()
        return [slot for slot in missing if slot not in again.containers]

    async def _remove(self, pairs: list[tuple[str | None, str]]) -> None:
        for container_id, slot_id in pairs:
            try:
                await self._calls(remove_worker, container_id, slot_id)
            except DockerFailure as exc:
                # Its row is gone already: the next pass finds it as a stray and retries.
                log.warning("pool reconcile: could not remove slot %s: %s", slot_id, exc)


def _not_running(rows: list[q.SlotRow], seen: Inventory) -> list[str]:
    """Ready rows whose container has ended. Only ended states count: a container listed
    while still 'created' may have become ready before the rows were read."""
    return [
        row.slot_id
        for row in rows
        if row.status == "ready"
        and row.slot_id in seen.containers
        and seen.containers[row.slot_id].status in ENDED_STATES
    ]


def _pairs(rows: list[q.SlotRow]) -> list[tuple[str | None, str]]:
    return [(row.container_id, row.slot_id) for row in rows]


def pool_inventory(client: docker.DockerClient, scope: Mapping[str, str]) -> Inventory:
    """Blocking: the worker containers and bundle volumes carrying this pool's labels."""
    labels = [f"{ROLE_LABEL}={WORKER_ROLE}", *(f"{k}={v}" for k, v in scope.items())]
    try:
        listed = client.api.containers(all=True, filters={"label": labels})
        volumes = client.api.volumes(filters={"label": labels}).get("Volumes") or []
    except (DockerException, requests.RequestException) as exc:
        raise DockerFailure(f"listing pool workers: {' '.join(str(exc).split())}") from exc
    containers = {
        slot: WorkerInfo(str(c["Id"]), slot, str(c["State"]))
        for c in listed
        if (slot := (c.get("Labels") or {}).get(SLOT_LABEL, ""))
    }
    volume_slots = {slot for v in volumes if (slot := (v.get("Labels") or {}).get(SLOT_LABEL))}
    return Inventory(containers, volume_slots)
