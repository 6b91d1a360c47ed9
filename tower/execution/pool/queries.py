"""Every SQL statement of the warm pool (table `pool_slots`).

A row exists for every worker container tower creates, from before the container exists
('starting' reservation, or 'busy' for a cold slot) until after it is removed, so the
reconcile loop can match rows and containers both ways. Deletes that race with a take
(idle or exited ready slots) are single statements that re-check `status = 'ready'`
under the row lock: a slot is either taken or deleted, never both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

from asyncpg import Record

from tower.db.pool import Connection, Pool, transaction


@dataclass(frozen=True)
class PoolKey:
    """Which warm containers are interchangeable: same daemon, same image, same shape."""

    docker_host: str
    image: str
    config_hash: str


@dataclass(frozen=True)
class SlotRow:
    slot_id: str
    status: str
    container_id: str | None


# Serialises fills of one Docker host across replicas, so counting and reserving
# is one atomic step and two replicas never both fill the same gap.
LOCK_HOST_FILL = "SELECT pg_advisory_xact_lock(hashtext('parpaing-pool:' || $1))"

# Reservations count as much as ready slots: they are containers on their way.
COUNT_WARM = """
SELECT count(*) FROM pool_slots
WHERE docker_host = $1 AND image = $2 AND config_hash = $3
  AND status IN ('starting', 'ready')
"""

RESERVE = """
INSERT INTO pool_slots (slot_id, docker_host, image, config_hash, status)
SELECT slot_id, $2, $3, $4, 'starting' FROM unnest($1::text[]) AS slot_id
RETURNING slot_id
"""

# Matches nothing if the reservation was deleted meanwhile (a stale-start reconcile):
# the caller then removes the container it made.
MARK_READY = """
UPDATE pool_slots SET status = 'ready', container_id = $2, ready_at = now()
WHERE slot_id = $1 AND status = 'starting'
RETURNING slot_id
"""

# The scalar subquery runs once (an InitPlan), so one statement locks and takes at most
# one slot; SKIP LOCKED lets concurrent takes pass each other instead of queueing.
TAKE = """
UPDATE pool_slots SET status = 'busy', job_id = $4, lease_token = $5, acquired_at = now()
WHERE slot_id = (
    SELECT slot_id FROM pool_slots
    WHERE docker_host = $1 AND image = $2 AND config_hash = $3 AND status = 'ready'
    ORDER BY ready_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING slot_id, container_id
"""

# What the pool's size follows (docs/execution.md, "An elastic pool"): jobs that hold a
# container or soon will, across replicas. A host's pool does not know which of the
# queued jobs another host will claim, so each prepares for all of them, within POOL_MAX.
# With the ready slots of the pool's key: while jobs queue and warm workers wait for them,
# the pool neither creates nor removes (a burst keeps the host's CPU for its jobs).
# Also the jobs submitted in the last $4 seconds, whatever their state: a burst's first
# jobs, run on the pool's warm workers, are over before its last ones are submitted, and
# pending + running alone undercounts it (48 of a burst of 50, so 2 of the next burst ran
# cold). A range of the jobs_created index.
DEMAND = """
SELECT (SELECT count(*) FROM jobs WHERE status = 'pending') AS pending,
       (SELECT count(*) FROM jobs WHERE status = 'running') AS running,
       (SELECT count(*) FROM jobs
        WHERE created_at > now() - make_interval(secs => $4)) AS arrived,
       (SELECT count(*) FROM pool_slots
        WHERE docker_host = $1 AND image = $2 AND config_hash = $3 AND status = 'ready') AS ready
"""

# The oldest ready slots past `$4` warm ones (ready and starting), taken under the host's
# fill lock: a shrinking pool gives back what demand no longer asks for. SKIP LOCKED and
# the status re-check leave a slot being taken to its job.
TRIM = """
DELETE FROM pool_slots
WHERE slot_id IN (
    SELECT slot_id FROM pool_slots
    WHERE docker_host = $1 AND image = $2 AND config_hash = $3 AND status = 'ready'
    ORDER BY ready_at
    LIMIT greatest($5::int - $4::int, 0)
    FOR UPDATE SKIP LOCKED
) AND status = 'ready'
RETURNING slot_id, status, container_id
"""

# A cold slot is recorded before its container is created, like a reservation.
INSERT_COLD = """
INSERT INTO pool_slots
    (slot_id, docker_host, image, config_hash, status, job_id, lease_token, acquired_at)
VALUES ($1, $2, $3, $4, 'busy', $5, $6, now())
"""

SET_CONTAINER = "UPDATE pool_slots SET container_id = $2 WHERE slot_id = $1"

DELETE_SLOT = "DELETE FROM pool_slots WHERE slot_id = $1"

# --- reconcile ------------------------------------------------------------------------

# Presence: every replica with a running pool on a Docker host holds this lock *shared*,
# on a connection kept for the pool's lifetime. When a replica stops, it lets go and tries
# the *exclusive* form: only the last replica on the host (for this deployment) gets it.
# $1 is the host, $2 the pool's scope (its WORKER_NET name).
_PRESENCE_KEY = "hashtext('parpaing-presence:' || $1 || ':' || $2)"
# A replica killed with its container (docker kill) sends no FIN: its backend, and the
# shared lock with it, would outlive it by the kernel's two hours of TCP idle. Keepalive
# probes on this connection end it within about 20 s of the peer vanishing.
PRESENCE_KEEPALIVE = (
    "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"
)
PRESENCE_SHARED = f"SELECT pg_advisory_lock_shared({_PRESENCE_KEY})"
PRESENCE_UNSHARE = f"SELECT pg_advisory_unlock_shared({_PRESENCE_KEY})"
TRY_PRESENCE_ALONE = f"SELECT pg_try_advisory_lock({_PRESENCE_KEY})"

# Session-level, held for one pass on the pass's own connection: one replica per host
# reconciles at a time; the others skip the round.
TRY_RECONCILE_LOCK = "SELECT pg_try_advisory_lock(hashtext('parpaing-reconcile:' || $1))"
RECONCILE_LOCK = "SELECT pg_advisory_lock(hashtext('parpaing-reconcile:' || $1))"
RECONCILE_UNLOCK = "SELECT pg_advisory_unlock(hashtext('parpaing-reconcile:' || $1))"

HOST_ROWS = "SELECT slot_id, status, container_id FROM pool_slots WHERE docker_host = $1"

# Only rows that already had a container: a row still waiting for its container is
# not "gone", it is not there yet.
DELETE_GONE = """
DELETE FROM pool_slots
WHERE docker_host = $1 AND slot_id = ANY($2::text[]) AND container_id IS NOT NULL
RETURNING slot_id, status, container_id
"""

# Ready slots whose container exited: unusable, never handed out.
DELETE_EXITED_READY = """
DELETE FROM pool_slots
WHERE docker_host = $1 AND slot_id = ANY($2::text[]) AND status = 'ready'
RETURNING slot_id, status, container_id
"""

# Strictly older than the limit, so a warm container lives POOL_MAX_IDLE, never less.
DELETE_IDLE = """
DELETE FROM pool_slots
WHERE docker_host = $1 AND status = 'ready'
  AND ready_at < now() - make_interval(secs => $2)
RETURNING slot_id, status, container_id
"""

# A busy slot outlives its job when its tower died: the reaper requeued or failed the
# job (new token or no longer running), so nobody will ever discard this slot.
DELETE_ORPHANED_BUSY = """
DELETE FROM pool_slots AS s
WHERE s.docker_host = $1 AND s.status = 'busy'
  AND NOT EXISTS (
      SELECT 1 FROM jobs AS j
      WHERE j.job_id = s.job_id AND j.status = 'running' AND j.lease_token = s.lease_token
  )
RETURNING s.slot_id, s.status, s.container_id
"""

# A reservation whose creator died (or hung) never becomes ready on its own.
DELETE_STALE_STARTING = """
DELETE FROM pool_slots
WHERE docker_host = $1 AND status = 'starting'
  AND created_at < now() - make_interval(secs => $2)
RETURNING slot_id, status, container_id
"""


async def reserve(pool: Pool, key: PoolKey, size: int, candidates: list[str]) -> list[str]:
    """Reserve slots up to `size` for `key`; returns the reserved ids (maybe none).
    `candidates` are fresh ids, at least `size` of them."""
    async with transaction(pool) as connection:
        await connection.execute(LOCK_HOST_FILL, key.docker_host)
        have: int = await connection.fetchval(COUNT_WARM, *_key_args(key))
        wanted = candidates[: max(size - have, 0)]
        if not wanted:
            return []
        rows = await connection.fetch(RESERVE, wanted, *_key_args(key))
    return [row["slot_id"] for row in rows]


async def trim(pool: Pool, key: PoolKey, size: int) -> list[SlotRow]:
    """Delete ready slots of `key` past `size` warm ones, oldest first; returns them (their
    containers are the caller's to remove)."""
    async with transaction(pool) as connection:
        await connection.execute(LOCK_HOST_FILL, key.docker_host)
        have: int = await connection.fetchval(COUNT_WARM, *_key_args(key))
        if have <= size:
            return []
        return _slot_rows(await connection.fetch(TRIM, *_key_args(key), size, have))


# How far back a job's submission counts as demand (DEMAND): longer than a burst takes to
# submit, shorter than a warm job takes to be followed by the next burst.
ARRIVALS_SECONDS = 2.0


@dataclass(frozen=True)
class Demand:
    pending: int  # jobs queued, across replicas
    running: int  # jobs running, across replicas
    ready: int  # ready slots of the key asked about
    arrived: int = 0  # jobs submitted in the last ARRIVALS_SECONDS, across replicas

    @property
    def jobs(self) -> int:
        return max(self.pending + self.running, self.arrived)

    @property
    def burst(self) -> bool:
        """Jobs queue while warm workers wait for them: no time for housekeeping."""
        return self.pending > 0 and self.ready > 0


async def demand(pool: Pool, key: PoolKey) -> Demand:
    row = await pool.fetchrow(DEMAND, *_key_args(key), ARRIVALS_SECONDS)
    assert row is not None
    return Demand(row["pending"], row["running"], row["ready"], row["arrived"])


async def mark_ready(pool: Pool, slot_id: str, container_id: str) -> bool:
    return await pool.fetchval(MARK_READY, slot_id, container_id) is not None


async def take(pool: Pool, key: PoolKey, job_id: str, token: UUID) -> SlotRow | None:
    row = await pool.fetchrow(TAKE, *_key_args(key), job_id, token)
    if row is None:
        return None
    return SlotRow(row["slot_id"], "busy", row["container_id"])


async def insert_cold(pool: Pool, slot_id: str, key: PoolKey, job_id: str, token: UUID) -> None:
    await pool.execute(INSERT_COLD, slot_id, *_key_args(key), job_id, token)


async def set_container(pool: Pool, slot_id: str, container_id: str) -> None:
    await pool.execute(SET_CONTAINER, slot_id, container_id)


async def delete_slot(pool: Pool, slot_id: str) -> None:
    await pool.execute(DELETE_SLOT, slot_id)


async def try_reconcile_lock(connection: Connection, docker_host: str) -> bool:
    locked: bool = await connection.fetchval(TRY_RECONCILE_LOCK, docker_host)
    return locked


async def reconcile_lock(connection: Connection, docker_host: str) -> None:
    await connection.execute(RECONCILE_LOCK, docker_host)


async def reconcile_unlock(connection: Connection, docker_host: str) -> None:
    await connection.execute(RECONCILE_UNLOCK, docker_host)


async def host_rows(connection: Connection, docker_host: str) -> list[SlotRow]:
    return _slot_rows(await connection.fetch(HOST_ROWS, docker_host))


async def delete_gone(connection: Connection, docker_host: str, ids: list[str]) -> list[SlotRow]:
    return _slot_rows(await connection.fetch(DELETE_GONE, docker_host, ids))


async def delete_exited_ready(
    connection: Connection, docker_host: str, ids: list[str]
) -> list[SlotRow]:
    return _slot_rows(await connection.fetch(DELETE_EXITED_READY, docker_host, ids))


async def delete_idle(connection: Connection, docker_host: str, max_idle: float) -> list[SlotRow]:
    return _slot_rows(await connection.fetch(DELETE_IDLE, docker_host, max_idle))


async def delete_orphaned_busy(connection: Connection, docker_host: str) -> list[SlotRow]:
    return _slot_rows(await connection.fetch(DELETE_ORPHANED_BUSY, docker_host))


async def delete_stale_starting(
    connection: Connection, docker_host: str, deadline: float
) -> list[SlotRow]:
    return _slot_rows(await connection.fetch(DELETE_STALE_STARTING, docker_host, deadline))


def _key_args(key: PoolKey) -> tuple[str, str, str]:
    return key.docker_host, key.image, key.config_hash


def _slot_rows(rows: Iterable[Record]) -> list[SlotRow]:
    return [SlotRow(r["slot_id"], r["status"], r["container_id"]) for r in rows]


async def hold_presence(connection: Connection, docker_host: str, scope: str) -> None:
    await connection.execute(PRESENCE_KEEPALIVE)
    await connection.execute(PRESENCE_SHARED, docker_host, scope)


async def last_present(connection: Connection, docker_host: str, scope: str) -> bool:
    """Let go of this replica's presence; True if no other replica holds one."""
    await connection.execute(PRESENCE_UNSHARE, docker_host, scope)
    alone: bool = await connection.fetchval(TRY_PRESENCE_ALONE, docker_host, scope)
    return alone
