"""The warm pool: started, idle worker containers per Docker host, rows in PostgreSQL.

Contract: docs/execution.md, "The warm pool" and "An elastic pool". A fill loop keeps
slots of the default shape ready on this host, across all replicas (reservations, counted
under a per-host lock, keep replicas from overshooting): as many as the highest demand
(queued plus running jobs) seen in the last POOL_IDLE_SECONDS, within POOL_MIN and
POOL_MAX; what demand no longer asks for is trimmed. It wakes on every take and once a
second (DEMAND_TICK). A reconcile loop (reconcile.py) runs at start and every
POOL_CHECK_INTERVAL.

A pool's containers carry `parpaing.pool=<WORKER_NET>`: deployments sharing a daemon
use distinct WORKER_NET names (once their workers' bridges; workers have no network
now), and that name is what tells one deployment's workers from another's.

Stopping leaves ready containers running: the next start, or another replica, uses
them, and the reconcile removes what nobody will. With POOL_DRAIN_ON_LAST_STOP, the
last replica on the host to stop (presence locks, see pool_queries) removes the ready
ones itself, so nothing of the deployment outlives it; busy slots of jobs still running
are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import docker
import requests
from docker.errors import DockerException, NotFound

from tower.db.outage import DATABASE_ERRORS
from tower.db.pool import Connection, Pool
from tower.execution.docker.client import DockerCalls
from tower.execution.docker.containers import (
    DockerFailure,
    Timed,
    create_worker,
    docker_host_id,
    remove_worker,
)
from tower.execution.docker.hardening import bundle_volume_name, config_hash
from tower.execution.docker.network import ensure_socket_volume
from tower.execution.pool import queries as q
from tower.execution.pool.reconcile import Reconciled, Reconciler
from tower.execution.runner import ClaimedJob
from tower.execution.slots import ContainerShape, Slot
from tower.observability.metrics import TowerMetrics
from tower.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

POOL_LABEL = "parpaing.pool"
# Seconds between fill rounds when nothing takes a slot: how soon a burst queued behind
# busy workers, or an idle pool, is acted on.
DEMAND_TICK = 1.0
# Seconds between looks at demand, in a loop of their own: a fill round that creates
# workers takes seconds, and a burst's peak must not pass unseen meanwhile.
DEMAND_SAMPLE = 0.25
# POOL_MAX unset: warm workers may hold this share of the Docker host's memory, counted at
# WARM_WORKER_BYTES each (an idle worker's footprint, measured: docs/execution.md), and
# never more than AUTO_POOL_MAX of them.
AUTO_POOL_MEMORY_SHARE = 0.1
WARM_WORKER_BYTES = 32 << 20
AUTO_POOL_MAX = 64
# Seconds stop() waits for the fill and demand loops to end on their own.
STOP_WAIT = 30.0
BACKOFF_FIRST = 1.0  # seconds, doubled per failed fill round
BACKOFF_MAX = 60.0
# What a Docker or database outage looks like: logged, left to the next round.
RECOVERABLE: tuple[type[BaseException], ...] = (DockerFailure, *DATABASE_ERRORS)
# Warm slots found dead at take time before giving up on warm and going cold.
WARM_ATTEMPTS = 3


def pool_scope(settings: Settings) -> dict[str, str]:
    """The labels that mark this deployment's workers on a shared daemon."""
    return {POOL_LABEL: settings.worker_net}


def new_slot_id() -> str:
    return secrets.token_hex(6)


def pool_bounds(settings: Settings, host_memory: int) -> tuple[int, int]:
    """POOL_MIN and POOL_MAX, the latter fitted to the host's memory when unset."""
    low = int(settings.pool_min)
    if settings.pool_max is not None:
        return low, max(low, int(settings.pool_max))
    fitted = int(host_memory * AUTO_POOL_MEMORY_SHARE) // WARM_WORKER_BYTES
    return low, max(low, min(AUTO_POOL_MAX, fitted))


class PeakDemand:
    """The highest demand seen, held while demand stays at half of it or more, and for
    `window` seconds after it fell below: a burst draining away keeps its pool, a quiet
    spell of `window` gives it back (to the demand seen then)."""

    def __init__(self, window: float) -> None:
        self._window = window
        self._peak = 0
        self._held_at = -math.inf

    def note(self, demand: int, now: float) -> int:
        if now - self._held_at > self._window:
            self._peak = demand
        self._peak = max(self._peak, demand)
        if demand * 2 >= self._peak:
            self._held_at = now
        return self._peak


class WarmPool:
    """A SlotSource (slots.py) backed by the pool_slots table."""

    def __init__(
        self,
        settings: Settings,
        db: Pool,
        calls: DockerCalls,
        default_shape: ContainerShape,
        docker_host: str,
        host_memory: int = 0,
        metrics: TowerMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics or TowerMetrics("")
        self._min, self._max = pool_bounds(settings, host_memory)
        self._peak = PeakDemand(float(settings.pool_idle_seconds))
        self._db = db
        self._calls = calls
        self._default_shape = default_shape
        self._host = docker_host
        self._default_key = self._key_for(default_shape)
        self._labels = pool_scope(settings)
        self._reconciler = Reconciler(settings, db, calls, docker_host, self._labels)
        self._refill = asyncio.Event()
        self._creations = asyncio.Semaphore(int(settings.pool_create_concurrency))
        self._stopping = False
        # Used slots whose removal waits for the end of a burst (`retire`).
        self._retired: list[Slot] = []
        self._burst = False
        self._queued = False
        self._tasks: list[asyncio.Task[None]] = []
        self._presence: Connection | None = None

    @classmethod
    async def start(
        cls,
        settings: Settings,
        db: Pool,
        calls: DockerCalls,
        default_shape: ContainerShape,
        metrics: TowerMetrics | None = None,
    ) -> WarmPool:
        """A running pool: one reconcile pass done, the fill and reconcile loops started."""
        host = await calls(docker_host_id)
        memory = await calls(host_memory)
        # Before any worker mounts it, or Docker would make a plain volume of that name.
        await calls(ensure_socket_volume, default_shape.gateway_socket)
        pool = cls(settings, db, calls, default_shape, host, memory, metrics)
        log.info("warm pool on %s: %s to %s workers", host[:12], pool._min, pool._max)
        await pool._announce()
        await pool._reconcile_round()
        pool._tasks = [
            asyncio.create_task(pool._fill_loop(), name="pool-fill"),
            asyncio.create_task(pool._demand_loop(), name="pool-demand"),
            asyncio.create_task(pool._reconcile_loop(), name="pool-reconcile"),
        ]
        return pool

    async def stop(self) -> None:
        """Stop both loops. Creations under way finish (or their reservation is dropped
        if not yet begun); ready containers stay for whoever starts next."""
        self._stopping = True
        self._refill.set()
        tasks, self._tasks = self._tasks, []
        # The fill and demand loops end at their next wait: cancelled in the middle of a
        # query, a pooled connection could be left to a reset that never ends.
        looping = [task for task in tasks if task.get_name() != "pool-reconcile"]
        if looping:
            await asyncio.wait(looping, timeout=STOP_WAIT)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._remove_retired()
        await self._leave()

    async def _announce(self) -> None:
        """Hold this replica's presence on the host for as long as the pool runs."""
        if not self._settings.pool_drain_on_last_stop:
            return
        self._presence = await self._db.acquire()
        await q.hold_presence(self._presence, self._host, self._settings.worker_net)

    async def _leave(self) -> None:
        """Drain the ready slots if this was the last replica on the host."""
        presence, self._presence = self._presence, None
        if presence is None:
            return
        try:
            if await q.last_present(presence, self._host, self._settings.worker_net):
                drained = await self._reconciler.drain_once()
                log.info("pool: last replica on this host stopped; drained %s", drained)
        except RECOVERABLE as exc:
            # The next start's reconcile removes what this one could not.
            log.warning("pool: drain on stop failed: %r", exc)
        finally:
            # Releasing resets the connection, which lets go of every advisory lock on it.
            await self._db.release(presence)

    @property
    def docker_host(self) -> str:
        return self._host

    @property
    def default_shape(self) -> ContainerShape:
        return self._default_shape

    @property
    def default_key(self) -> q.PoolKey:
        return self._default_key

    @property
    def bounds(self) -> tuple[int, int]:
        """POOL_MIN and POOL_MAX as this pool applies them."""
        return self._min, self._max

    async def reconcile_once(self) -> Reconciled | None:
        """One reconcile pass now (None if another replica is running one)."""
        done = await self._reconciler.run_once()
        # Whatever it removed, and whatever other replicas took and never refilled.
        self._refill.set()
        return done

    # --- SlotSource ------------------------------------------------------------------

    async def take(self, job: ClaimedJob, shape: ContainerShape) -> Slot:
        key = self._key_for(shape)
        if key == self._default_key:
            slot = await self._take_warm(job)
            if slot is not None:
                return slot
        return await self._take_cold(job, shape, key)

    async def retire(self, slot: Slot) -> None:
        """A used slot: removed now, or, while a burst runs on warm workers, once it is
        over (the fill loop's next round without one), so removals do not slow it."""
        if self._burst and not self._stopping:
            self._retired.append(slot)
            return
        with self._metrics.timing("remove"):
            await self.discard(slot)

    async def _remove_retired(self) -> None:
        retired, self._retired = self._retired, []

        async def remove(slot: Slot) -> None:
            async with self._creations:
                with self._metrics.timing("remove"):
                    await self.discard(slot)

        await asyncio.gather(*(remove(slot) for slot in retired))

    async def discard(self, slot: Slot) -> None:
        """Best effort, never raising: what fails here the reconcile removes later (a busy
        row whose job has ended, or a container whose row is gone)."""
        try:
            await self._calls(remove_worker, slot.container_id, slot.slot_id)
            await q.delete_slot(self._db, slot.slot_id)
        except RECOVERABLE as exc:
            log.warning("slot %s: discard left for the reconcile: %s", slot.slot_id, exc)

    # --- take ------------------------------------------------------------------------

    async def _take_warm(self, job: ClaimedJob) -> Slot | None:
        for _ in range(WARM_ATTEMPTS):
            row = await q.take(self._db, self._default_key, job.job_id, job.lease_token)
            self._refill.set()
            if row is None or row.container_id is None:
                return None
            slot = Slot(row.slot_id, row.container_id, bundle_volume_name(row.slot_id), True)
            if await self._still_running(slot):
                return slot
            log.warning("slot %s: warm container had stopped; discarding it", slot.slot_id)
            await self.discard(slot)
        return None

    async def _still_running(self, slot: Slot) -> bool:
        try:
            return await self._calls(_is_running, slot.container_id)
        except BaseException:
            # Cancelled or failed after the row became ours: nobody else will discard it.
            await self.discard(slot)
            raise

    async def _take_cold(self, job: ClaimedJob, shape: ContainerShape, key: q.PoolKey) -> Slot:
        # The fills' bound holds for jobs' own creations too: Docker creates no more
        # containers a second with more at once, it only makes each one slower (a queue
        # of 200 on 2 cores, 8 jobs at once: 2.2 s a creation unbounded, 1.0-1.4 s with 4).
        async with self._creations:
            return await self._create_for(job, shape, key)

    async def _create_for(self, job: ClaimedJob, shape: ContainerShape, key: q.PoolKey) -> Slot:
        slot_id = new_slot_id()
        await q.insert_cold(self._db, slot_id, key, job.job_id, job.lease_token)
        creating = asyncio.ensure_future(self._create_cold(slot_id, shape))
        try:
            return await asyncio.shield(creating)
        except asyncio.CancelledError:
            # The creation runs in a thread that cannot be interrupted: let it end, then
            # remove what it made, so a cancelled job leaves no container behind.
            slot = await _outcome(creating)
            if slot is not None:
                await self.discard(slot)
            raise

    async def _create_cold(self, slot_id: str, shape: ContainerShape) -> Slot:
        try:
            container_id = await self._create(slot_id, shape, self._metrics.job_phase)
        except BaseException:
            await q.delete_slot(self._db, slot_id)
            raise
        await q.set_container(self._db, slot_id, container_id)
        return Slot(slot_id, container_id, bundle_volume_name(slot_id), False)

    async def _create(self, slot_id: str, shape: ContainerShape, timed: Timed | None) -> str:
        return await self._calls(
            create_worker, shape, self._settings, slot_id, self._labels, timed=timed
        )

    def _key_for(self, shape: ContainerShape) -> q.PoolKey:
        return q.PoolKey(self._host, shape.image, config_hash(shape))

    # --- fill ------------------------------------------------------------------------

    async def _fill_loop(self) -> None:
        backoff = 0.0
        while not self._stopping:
            self._refill.clear()
            if await self.fill_once():
                backoff = 0.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._refill.wait(), DEMAND_TICK)
            else:
                backoff = min(max(backoff * 2, BACKOFF_FIRST), BACKOFF_MAX)
                log.warning("pool fill: retrying in %.0f s", backoff)
                await asyncio.sleep(backoff)

    async def fill_once(self) -> bool:
        """One fill round now: size the pool to demand, reserve up to that size (create
        and mark ready what was reserved) or trim it down to it. False if anything failed
        (logged)."""
        try:
            return await self._fill_round()
        except Exception:
            # A bug in one round must not end the loop for the replica's lifetime.
            log.exception("pool fill: round failed")
            return False

    async def _fill_round(self) -> bool:
        try:
            size = await self.target()
            if self._burst:
                return True  # no creation, removal or trim until the queue is served
            if self._queued and self._max > self._min:
                # The queue outruns the pool: its jobs create their own workers as fast as
                # Docker allows, and fills would only race them (and be left over). The
                # pool grows to its peak once the queue is served.
                return True
            reserved = await q.reserve(
                self._db, self._default_key, size, [new_slot_id() for _ in range(size)]
            )
            trimmed = [] if reserved else await q.trim(self._db, self._default_key, size)
        except DATABASE_ERRORS as exc:
            log.warning("pool fill: cannot size the pool: %r", exc)
            return False
        if trimmed:
            log.info("pool: demand fell; giving back %s warm workers", len(trimmed))
            await self._remove_trimmed(trimmed)
        made = await asyncio.gather(*(_run_to_end(self._make_warm(s)) for s in reserved))
        # After the creations: the next burst needs warm workers more than these gone.
        await self._remove_retired()
        return all(made)

    async def target(self) -> int:
        """How many warm workers this host should hold now: the peak demand (held while
        demand stays at half of it, and POOL_IDLE_SECONDS after), within POOL_MIN and
        POOL_MAX."""
        peak = await self._sample()
        return min(max(peak, self._min), self._max)

    async def _sample(self) -> int:
        """Look at demand now: whether a burst runs on warm workers, and the peak."""
        demand = await q.demand(self._db, self._default_key)
        self._burst = demand.burst
        self._queued = demand.pending > 0
        return self._peak.note(demand.jobs, time.monotonic())

    async def _demand_loop(self) -> None:
        if self._max == self._min:
            return  # a fixed pool: each fill round's look is enough
        while not self._stopping:
            await asyncio.sleep(DEMAND_SAMPLE)
            try:
                await self._sample()
            except DATABASE_ERRORS as exc:
                log.debug("pool demand: not read: %r", exc)
            except Exception:
                # A bug in one look must not end the loop for the replica's lifetime.
                log.exception("pool demand: look failed")

    async def _remove_trimmed(self, rows: list[q.SlotRow]) -> None:
        for row in rows:
            if row.container_id is not None:
                await self.discard(Slot(row.slot_id, row.container_id, "", True))

    async def _make_warm(self, slot_id: str) -> bool:
        async with self._creations:
            try:
                if self._stopping:
                    await q.delete_slot(self._db, slot_id)
                    return True
                await self._make_ready(slot_id)
                return True
            except Exception as exc:
                log.warning("pool fill: slot %s not created: %s", slot_id, exc)
                with contextlib.suppress(*DATABASE_ERRORS):
                    await q.delete_slot(self._db, slot_id)
                return False

    async def _make_ready(self, slot_id: str) -> None:
        with self._metrics.timing("fill"):
            container_id = await self._create(slot_id, self._default_shape, None)
        if not await q.mark_ready(self._db, slot_id, container_id):
            # The reconcile dropped the reservation as stale meanwhile: nobody will take it.
            await self._calls(remove_worker, container_id, slot_id)

    # --- reconcile -------------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.pool_check_interval)
            await self._reconcile_round()

    async def _reconcile_round(self) -> None:
        try:
            await self.reconcile_once()
        except RECOVERABLE as exc:
            log.warning("pool reconcile: round failed, retrying next interval: %r", exc)
        except Exception:
            # A bug in one round must not end the loop for the replica's lifetime.
            log.exception("pool reconcile: round failed")


def host_memory(client: docker.DockerClient) -> int:
    """Blocking: the Docker host's memory in bytes (0 when the daemon does not say)."""
    try:
        return int(client.info().get("MemTotal") or 0)
    except (DockerException, requests.RequestException) as exc:
        raise DockerFailure(f"asking the Docker host's memory: {exc}") from exc


def _is_running(client: docker.DockerClient, container_id: str) -> bool:
    """Blocking: whether the container is still up (a missing one is not)."""
    try:
        state = client.api.inspect_container(container_id)["State"]
    except NotFound:
        return False
    except (DockerException, requests.RequestException) as exc:
        raise DockerFailure(f"inspecting worker {container_id[:12]}: {exc}") from exc
    return bool(state.get("Running"))


async def _run_to_end(work: Coroutine[Any, Any, T]) -> T:
    """Await `work`; if the caller is cancelled meanwhile, `work` still runs to its end
    (its thread cannot be interrupted, and its row must be settled), then the cancel
    propagates."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


async def _outcome(task: asyncio.Future[T]) -> T | None:
    """The task's result once it ends, or None if it failed or was cancelled."""
    await asyncio.wait([task])
    if task.cancelled() or task.exception() is not None:
        return None
    return task.result()
