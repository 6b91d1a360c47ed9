"""The warm pool against a real Docker daemon and a real PostgreSQL.

Each test has its own database and its own workers network; the pool labels its
containers with that network's name, so a test sees (and reconciles) only its own
workers, never those of another test or another process on the same daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import docker
import pytest
from docker.errors import NotFound

from tests.e2e.support import fixed_pool
from tower.db.pool import Pool, create_pool
from tower.execution.docker import containers
from tower.execution.docker.client import DockerCalls
from tower.execution.docker.hardening import bundle_volume_name, shape_from_settings
from tower.execution.pool import queries as pool_queries
from tower.execution.pool.reconcile import Reconciled
from tower.execution.pool.warm import POOL_LABEL, WarmPool, new_slot_id, pool_scope
from tower.execution.runner import ClaimedJob
from tower.execution.slots import ContainerShape, Slot
from tower.settings import Settings

DEADLINE = 90.0  # seconds: generous, the host is small and shared
MAX_IDLE = 10  # the lowest POOL_MAX_IDLE Settings accepts

PoolFactory = Callable[..., Awaitable[WarmPool]]


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def worker_net(docker_client: docker.DockerClient) -> Iterator[str]:
    """A WORKER_NET (pool scope) of this test's own, and its gateway socket volume;
    everything labelled with it goes afterwards, and the volume after that."""
    name = f"parpaing-test-pool-{uuid.uuid4().hex[:10]}"
    yield name
    _remove_labelled(docker_client, name)
    with contextlib.suppress(NotFound):
        docker_client.api.remove_volume(f"{name}-socket", force=True)


def _remove_labelled(client: docker.DockerClient, net: str) -> None:
    label = {"label": f"{POOL_LABEL}={net}"}
    for container in client.api.containers(all=True, filters=label):
        with contextlib.suppress(NotFound):
            client.api.remove_container(container["Id"], force=True)
    for volume in client.api.volumes(filters=label).get("Volumes") or []:
        with contextlib.suppress(NotFound):
            client.api.remove_volume(volume["Name"], force=True)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Pool]:
    pool = await create_pool(database_url, 8)
    yield pool
    await pool.close()


@pytest.fixture
async def start_pool(
    docker_client: docker.DockerClient, worker_image: str, worker_net: str, db: Pool
) -> AsyncIterator[PoolFactory]:
    """Starts WarmPools ("replicas") on the test's database and network; stops them after.
    Each has its own Docker calls, as each replica's runner does."""
    started: list[tuple[WarmPool, DockerCalls]] = []

    async def start(**overrides: Any) -> WarmPool:
        settings = pool_settings(worker_image, worker_net, **overrides)
        image = containers.image_id(docker_client, worker_image)
        calls = await DockerCalls.open(settings.max_concurrent_jobs)
        pool = await WarmPool.start(settings, db, calls, shape_from_settings(settings, image))
        started.append((pool, calls))
        return pool

    yield start
    for pool, calls in started:
        await pool.stop()
        await calls.close()


def pool_settings(image: str, net: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "worker_image": image,
        "worker_net": net,
        "gateway_socket_volume": f"{net}-socket",
        "pool_size": 2,
        # Tests run reconcile passes themselves; the loop only runs its start-up pass.
        "pool_check_interval": 3600,
        "pool_max_idle": MAX_IDLE,
        "worker_mem_limit": "256m",
        "worker_cpu_limit": 0.5,
    }
    return Settings(**{**values, **fixed_pool({"pool_size": 2, **overrides}), **overrides})


# --- helpers -----------------------------------------------------------------------------


def a_job(job_id: str | None = None, token: uuid.UUID | None = None) -> ClaimedJob:
    return ClaimedJob(
        job_id=job_id or f"j-{uuid.uuid4().hex[:12]}",
        agent_id="pool-test",
        engine="claude-code",
        profile="default",
        request={},
        attempt=1,
        lease_token=token or uuid.uuid4(),
    )


async def slot_counts(db: Pool) -> dict[str, int]:
    rows = await db.fetch("SELECT status, count(*) AS n FROM pool_slots GROUP BY status")
    return {row["status"]: row["n"] for row in rows}


async def until(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    """Poll `check` until true; fail after DEADLINE. For moments nothing announces."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + DEADLINE
    while not await check():
        if loop.time() > give_up:
            pytest.fail(f"not reached within {DEADLINE:g} s: {what}")
        await asyncio.sleep(0.1)


async def until_ready(db: Pool, n: int) -> None:
    async def settled() -> bool:
        return await slot_counts(db) == {"ready": n} if n else await slot_counts(db) == {}

    await until(f"{n} ready slots and nothing starting", settled)


def pool_containers(client: docker.DockerClient, net: str) -> dict[str, str]:
    """This test's worker containers: slot id → state."""
    listed = client.api.containers(all=True, filters={"label": f"{POOL_LABEL}={net}"})
    return {c["Labels"]["parpaing.slot"]: c["State"] for c in listed}


def exists(client: docker.DockerClient, container_id: str) -> bool:
    try:
        client.api.inspect_container(container_id)
    except NotFound:
        return False
    return True


def volume_exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.api.inspect_volume(name)
    except NotFound:
        return False
    return True


async def ready_slots(db: Pool) -> list[tuple[str, str]]:
    rows = await db.fetch(
        "SELECT slot_id, container_id FROM pool_slots WHERE status = 'ready' ORDER BY ready_at"
    )
    return [(row["slot_id"], row["container_id"]) for row in rows]


async def insert_running_job(db: Pool, job_id: str, token: uuid.UUID) -> None:
    await db.execute(
        "INSERT INTO jobs (job_id, agent_id, engine, profile, status, request, lease_token)"
        " VALUES ($1, 'pool-test', 'claude-code', 'default', 'running', '{}', $2)",
        job_id,
        token,
    )


# --- fill --------------------------------------------------------------------------------


async def test_fill_reaches_pool_size_and_no_more(
    start_pool: PoolFactory, db: Pool, docker_client: docker.DockerClient, worker_net: str
) -> None:
    pool = await start_pool(pool_size=2)
    await until_ready(db, 2)
    # Further rounds find the pool full and create nothing.
    assert await pool.fill_once()
    assert await pool.fill_once()
    assert await slot_counts(db) == {"ready": 2}
    ready = {slot for slot, _ in await ready_slots(db)}
    assert pool_containers(docker_client, worker_net) == dict.fromkeys(ready, "running")


async def test_two_replicas_fill_together_without_overshoot(
    start_pool: PoolFactory, db: Pool, docker_client: docker.DockerClient, worker_net: str
) -> None:
    first, second = await asyncio.gather(start_pool(pool_size=3), start_pool(pool_size=3))
    await until_ready(db, 3)
    # Empty the pool without waking either fill loop, so only the rounds below fill it.
    for slot_id, container_id in await ready_slots(db):
        await first.discard(Slot(slot_id, container_id, bundle_volume_name(slot_id), True))

    async with db.acquire() as blocker, blocker.transaction():
        # Inserts wait on this table lock; counting does not. Four rounds from two
        # replicas all reach the point of reserving before any can: without the per-host
        # fill lock each would count an empty pool and reserve three. The replicas' own
        # timed rounds (every DEMAND_TICK) may queue behind the lock too: more rounds in
        # the race, the same answer expected.
        await blocker.execute("LOCK TABLE pool_slots IN EXCLUSIVE MODE")
        rounds = [asyncio.create_task(r.fill_once()) for r in (first, second, first, second)]
        await until("four fill rounds waiting on locks", lambda: waiting_on_locks(db, 4))
    assert all(await asyncio.gather(*rounds))

    assert await slot_counts(db) == {"ready": 3}
    assert len(pool_containers(docker_client, worker_net)) == 3


async def waiting_on_locks(db: Pool, n: int) -> bool:
    """At least `n` lock requests wait in the test's database."""
    waiting = await db.fetchval(
        "SELECT count(*) FROM pg_locks WHERE NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    return bool(waiting >= n)


async def test_stopping_leaves_ready_containers_for_the_next_start(
    start_pool: PoolFactory, db: Pool, docker_client: docker.DockerClient, worker_net: str
) -> None:
    first = await start_pool(pool_size=2)
    await until_ready(db, 2)
    before = await ready_slots(db)
    await first.stop()

    second = await start_pool(pool_size=2)  # its start-up reconcile has run
    assert await second.fill_once()
    assert await ready_slots(db) == before
    assert pool_containers(docker_client, worker_net) == {s: "running" for s, _ in before}
    assert (await second.take(a_job(), second.default_shape)).slot_id == before[0][0]


async def test_the_last_replica_to_stop_drains_the_pool_and_only_the_last(
    start_pool: PoolFactory, db: Pool, docker_client: docker.DockerClient, worker_net: str
) -> None:
    first = await start_pool(pool_size=2, pool_drain_on_last_stop=True)
    second = await start_pool(pool_size=2, pool_drain_on_last_stop=True)
    running = a_job()
    await insert_running_job(db, running.job_id, running.lease_token)
    busy = await second.take(running, second.default_shape)
    await until("refilled after the take", _two_ready_one_busy(db))

    await first.stop()  # another replica still runs: its warm containers are its to use
    assert len(await ready_slots(db)) == 2
    # A fresh reservation whose creator died (killed mid-fill): only the last one may drop it.
    await db.execute(
        "INSERT INTO pool_slots (slot_id, docker_host, image, config_hash, status)"
        " VALUES ($1, $2, 'gone', 'gone', 'starting')",
        new_slot_id(),
        second.docker_host,
    )

    await second.stop()  # the last one: the idle go, the running job's container stays
    assert await slot_counts(db) == {"busy": 1}
    assert pool_containers(docker_client, worker_net) == {busy.slot_id: "running"}


def _two_ready_one_busy(db: Pool) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await slot_counts(db) == {"ready": 2, "busy": 1}

    return check


# --- take --------------------------------------------------------------------------------


async def test_concurrent_takes_get_distinct_single_use_slots(
    start_pool: PoolFactory, db: Pool, docker_client: docker.DockerClient, worker_net: str
) -> None:
    pool = await start_pool(pool_size=3)
    await until_ready(db, 3)
    warm_ids = {slot for slot, _ in await ready_slots(db)}
    jobs = [a_job() for _ in range(4)]
    slots = await asyncio.gather(*(pool.take(job, pool.default_shape) for job in jobs))

    assert len({s.slot_id for s in slots}) == 4
    assert len({s.container_id for s in slots}) == 4
    # Three were warm; the fourth found the pool empty (or a fresh refill).
    assert warm_ids <= {s.slot_id for s in slots if s.warm}
    for job, slot in zip(jobs, slots, strict=True):
        owner = await db.fetchrow(
            "SELECT status, job_id, lease_token FROM pool_slots WHERE slot_id = $1", slot.slot_id
        )
        assert tuple(owner) == ("busy", job.job_id, job.lease_token)

    used = slots[0]
    await pool.discard(used)
    assert (
        await db.fetchval("SELECT count(*) FROM pool_slots WHERE slot_id = $1", used.slot_id) == 0
    )
    assert not exists(docker_client, used.container_id)
    assert not volume_exists(docker_client, used.volume)
    again = await pool.take(a_job(), pool.default_shape)
    assert again.slot_id not in {s.slot_id for s in slots}


async def test_a_take_triggers_a_refill(start_pool: PoolFactory, db: Pool) -> None:
    # The reconcile timer is an hour away: only the take itself can wake the fill.
    pool = await start_pool(pool_size=2)
    await until_ready(db, 2)
    taken = await pool.take(a_job(), pool.default_shape)
    assert taken.warm

    async def refilled() -> bool:
        return await slot_counts(db) == {"ready": 2, "busy": 1}

    await until("the pool refilled to 2 ready beside the busy slot", refilled)


async def test_a_different_shape_gets_a_cold_busy_slot(
    start_pool: PoolFactory, db: Pool, docker_client: docker.DockerClient
) -> None:
    pool = await start_pool(pool_size=1)
    await until_ready(db, 1)
    bigger = ContainerShape(**{**vars(pool.default_shape), "pids_limit": 512})
    job = a_job()
    slot = await pool.take(job, bigger)

    assert not slot.warm
    assert docker_client.api.inspect_container(slot.container_id)["HostConfig"]["PidsLimit"] == 512
    row = await db.fetchrow(
        "SELECT status, job_id, container_id FROM pool_slots WHERE slot_id = $1", slot.slot_id
    )
    assert tuple(row) == ("busy", job.job_id, slot.container_id)
    assert await slot_counts(db) == {"ready": 1, "busy": 1}  # the warm one was left alone


async def test_an_empty_pool_serves_cold(start_pool: PoolFactory, db: Pool) -> None:
    pool = await start_pool(pool_size=0)
    slot = await pool.take(a_job(), pool.default_shape)
    assert not slot.warm
    assert await slot_counts(db) == {"busy": 1}
    await pool.discard(slot)
    assert await slot_counts(db) == {}


async def test_jobs_creating_their_own_workers_keep_to_the_creation_bound(
    start_pool: PoolFactory, db: Pool, docker_client: docker.DockerClient
) -> None:
    # More creations at once only slow each one: a job's own creation waits its turn
    # like a fill. With a bound of 2, no container is created while two others are
    # still being created and started (the daemon's own timestamps say when).
    pool = await start_pool(pool_size=0, pool_create_concurrency=2)
    slots = await asyncio.gather(*(pool.take(a_job(), pool.default_shape) for _ in range(5)))

    spans = sorted(creation_span(docker_client, slot.container_id) for slot in slots)
    for created, _ in spans:
        under_way = [span for span in spans if span[0] < created < span[1]]
        assert len(under_way) <= 1, f"created at {created} beside {under_way}"
    assert not any(slot.warm for slot in slots)


def creation_span(client: docker.DockerClient, container_id: str) -> tuple[float, float]:
    """When Docker created the container and when it started."""
    found = client.api.inspect_container(container_id)
    return daemon_time(found["Created"]), daemon_time(found["State"]["StartedAt"])


def daemon_time(stamp: str) -> float:
    """Seconds since the epoch of Docker's RFC 3339 time (nanoseconds, trailing zeros
    dropped, so the strings do not compare as text)."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return seconds + float(f"0.{fraction or 0}")


# --- reconcile ---------------------------------------------------------------------------


async def reconcile(pool: WarmPool) -> Reconciled:
    done = await pool.reconcile_once()
    assert done is not None, "no other replica reconciles in this test"
    return done


async def test_a_container_removed_behind_the_pools_back_is_reconciled_and_replaced(
    start_pool: PoolFactory, db: Pool, docker_client: docker.DockerClient, worker_net: str
) -> None:
    pool = await start_pool(pool_size=2)
    await until_ready(db, 2)
    (victim, victim_container), (survivor, _) = await ready_slots(db)
    docker_client.api.remove_container(victim_container, force=True)  # docker rm -f

    assert await reconcile(pool) == Reconciled(rows_without_container=1)
    assert not volume_exists(docker_client, bundle_volume_name(victim))
    await until_ready(db, 2)
    remaining = {slot for slot, _ in await ready_slots(db)}
    assert survivor in remaining and victim not in remaining
    assert set(pool_containers(docker_client, worker_net)) == remaining


async def test_a_labelled_container_without_a_row_is_removed_but_a_fresh_reservation_is_kept(
    start_pool: PoolFactory, db: Pool, docker_client: docker.DockerClient, worker_net: str
) -> None:
    pool = await start_pool(pool_size=0)
    settings = pool_settings(pool.default_shape.image, worker_net)
    stray_slot, reserved_slot = new_slot_id(), new_slot_id()
    await db.execute(
        "INSERT INTO pool_slots (slot_id, docker_host, image, config_hash, status)"
        " VALUES ($1, $2, $3, $4, 'starting')",
        reserved_slot,
        *vars(pool.default_key).values(),
    )
    labels = pool_scope(settings)
    stray, reserved = await asyncio.gather(
        *(
            asyncio.to_thread(
                containers.create_worker, docker_client, pool.default_shape, settings, s, labels
            )
            for s in (stray_slot, reserved_slot)
        )
    )

    assert await reconcile(pool) == Reconciled(containers_without_row=1)
    assert not exists(docker_client, stray)
    assert not volume_exists(docker_client, bundle_volume_name(stray_slot))
    assert exists(docker_client, reserved)
    assert await slot_counts(db) == {"starting": 1}


async def test_a_ready_container_that_exited_is_removed_with_its_row(
    start_pool: PoolFactory, db: Pool, docker_client: docker.DockerClient
) -> None:
    pool = await start_pool(pool_size=1)
    await until_ready(db, 1)
    [(slot, container_id)] = await ready_slots(db)
    docker_client.api.kill(container_id)
    docker_client.api.wait(container_id)  # returns once it has exited

    assert await reconcile(pool) == Reconciled(exited_ready=1)
    assert not exists(docker_client, container_id)
    await until_ready(db, 1)
    assert [s for s, _ in await ready_slots(db)] != [slot]


async def test_idle_slots_live_pool_max_idle_and_no_less(
    start_pool: PoolFactory, db: Pool, docker_client: docker.DockerClient
) -> None:
    pool = await start_pool(pool_size=2, pool_max_idle=MAX_IDLE)
    await until_ready(db, 2)
    (old, old_container), (young, young_container) = await ready_slots(db)
    # Age them in SQL rather than waiting: one just past the limit, one just short of it.
    age = "UPDATE pool_slots SET ready_at = now() - make_interval(secs => $2) WHERE slot_id = $1"
    await db.execute(age, old, MAX_IDLE + 1.0)
    await db.execute(age, young, MAX_IDLE - 1.0)

    assert await reconcile(pool) == Reconciled(idle=1)
    assert not exists(docker_client, old_container)
    assert exists(docker_client, young_container)
    await until_ready(db, 2)
    assert young in {slot for slot, _ in await ready_slots(db)}


async def test_a_busy_slot_whose_job_is_no_longer_running_is_removed(
    start_pool: PoolFactory, db: Pool, docker_client: docker.DockerClient
) -> None:
    pool = await start_pool(pool_size=0)
    live, requeued, failed = a_job(), a_job(), a_job()
    for job in (live, requeued, failed):
        await insert_running_job(db, job.job_id, job.lease_token)
    slots = {
        job.job_id: await pool.take(job, pool.default_shape) for job in (live, requeued, failed)
    }
    # What the reaper does after a tower died with kill -9: a new token, or failed.
    await db.execute(
        "UPDATE jobs SET status = 'pending', lease_token = NULL WHERE job_id = $1",
        requeued.job_id,
    )
    await db.execute("UPDATE jobs SET status = 'failed' WHERE job_id = $1", failed.job_id)

    assert await reconcile(pool) == Reconciled(orphaned_busy=2)
    assert exists(docker_client, slots[live.job_id].container_id)
    assert not exists(docker_client, slots[requeued.job_id].container_id)
    assert not exists(docker_client, slots[failed.job_id].container_id)
    assert await slot_counts(db) == {"busy": 1}


async def test_a_stale_reservation_is_removed(start_pool: PoolFactory, db: Pool) -> None:
    pool = await start_pool(pool_size=0)
    await db.execute(
        "INSERT INTO pool_slots (slot_id, docker_host, image, config_hash, status, created_at)"
        " VALUES ($1, $2, $3, $4, 'starting', now() - interval '1 hour')",
        new_slot_id(),
        *vars(pool.default_key).values(),
    )
    assert await reconcile(pool) == Reconciled(stale_starting=1)
    assert await slot_counts(db) == {}


async def test_only_one_replica_reconciles_a_host_at_a_time(
    start_pool: PoolFactory, db: Pool
) -> None:
    first = await start_pool(pool_size=0)
    second = await start_pool(pool_size=0)
    async with db.acquire() as holder:
        # Holding the lock the way the first replica's pass does.
        assert await pool_queries.try_reconcile_lock(holder, first.docker_host)
        assert await second.reconcile_once() is None
        await pool_queries.reconcile_unlock(holder, first.docker_host)
    assert await second.reconcile_once() == Reconciled()
