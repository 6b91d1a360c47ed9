"""The queue's SQL: claiming, leases, finishing, reaping, retention.

The statements that change a job's status (claim, finish, release, reap) are in
tower/db/lifecycle.py; this module runs them, and holds the queue's other statements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from tower.db import channels, lifecycle
from tower.db.pool import Connection
from tower.db.statuses import TERMINAL_SQL
from tower.execution.runner import ClaimedJob
from tower.gateway import tokens as gateway_tokens
from tower.jobs import queries as job_queries
from tower.tenants import queries as tenant_queries

# Tokens are unique, so the token alone fences; status keeps cancelled jobs out.
HEARTBEAT = """
UPDATE jobs SET lease_until = now() + make_interval(secs => $2)
WHERE lease_token = ANY($1::uuid[]) AND status = 'running'
RETURNING lease_token
"""

PING = "SELECT 1"

# Whether PostgreSQL itself (its postmaster) started less than $1 seconds ago, by its own
# clock. Every lease runs out while the database is down, and no owner could renew it:
# reaped at once, a restart would look like every replica dying, and each running job
# would be requeued or failed. So for one lease period ($1 = LEASE_SECONDS) after a start
# nothing is reaped; the owners still alive renew within it (every third of a lease), and
# what is left expired after that belongs to a replica really gone.
DATABASE_SETTLING = "SELECT now() < pg_postmaster_start_time() + make_interval(secs => $1)"

# One replica at a time runs retention; the others skip this round.
TRY_RETENTION_LOCK = "SELECT pg_try_advisory_xact_lock($1)"
RETENTION_LOCK_KEY = 727_002

# Neither retention delete touches a job whose Idempotency-Key is still live (younger
# than IDEMPOTENCY_TTL_HOURS, the last parameter): deleting the job would cascade to the
# key, and a client retrying with it would get a second job instead of the replay.
# Such a job goes in a later round, once its key has expired.
_NO_LIVE_IDEMPOTENCY_KEY = """NOT EXISTS (
    SELECT 1 FROM idempotency_keys k
    WHERE k.job_id = jobs.job_id AND k.created_at > now() - make_interval(hours => $2)
)"""

# Both deletes keep what the jobs used, by tenant and day (tenant_usage), in the same
# statement: spend quotas and the usage view count it still.
_ROLLED_UP = f"""
RETURNING tenant, created_at, usage
), rolled AS ({tenant_queries.ROLL_UP_GONE})
SELECT count(*) FROM gone
"""

# Cancelled-while-pending jobs may lack finished_at; their age is then their creation.
# $1: JOB_TTL_HOURS, $2: IDEMPOTENCY_TTL_HOURS.
DELETE_EXPIRED_JOBS = f"""
WITH gone AS (
DELETE FROM jobs
WHERE status IN {TERMINAL_SQL}
  AND coalesce(finished_at, created_at) < now() - make_interval(hours => $1)
  AND {_NO_LIVE_IDEMPOTENCY_KEY}
{_ROLLED_UP}"""

# The finished jobs beyond the newest $1 (MAX_RETAINED_JOBS), minus those a live key
# protects ($2: IDEMPOTENCY_TTL_HOURS); protected jobs still count among the newest $1.
DELETE_SURPLUS_JOBS = f"""
WITH gone AS (
DELETE FROM jobs
WHERE job_id IN (
    SELECT job_id FROM jobs
    WHERE status IN {TERMINAL_SQL}
    ORDER BY coalesce(finished_at, created_at) DESC, job_id DESC
    OFFSET $1
)
  AND {_NO_LIVE_IDEMPOTENCY_KEY}
{_ROLLED_UP}"""

# The idempotency window is the jobs package's rule; one definition, shared.
DELETE_EXPIRED_IDEMPOTENCY_KEYS = job_queries.DELETE_EXPIRED_IDEMPOTENCY_KEYS


# The claim's columns that make a ClaimedJob (the last, pg_notify's, does not).
CLAIMED_FIELDS = (
    "job_id", "agent_id", "engine", "profile", "request", "attempt", "lease_token",
    "queued_seconds",
)  # fmt: skip


@dataclass(frozen=True)
class Finish:
    status: str
    exit_code: int | None
    result: str | None
    error: str | None
    failure_reason: str | None
    usage: dict[str, Any] | None
    duration_ms: int


@dataclass(frozen=True)
class Claim:
    jobs: list[ClaimedJob]
    # A tenant with a running quota has claimable jobs: one of its jobs ending anywhere
    # may let them start.
    held_back: bool
    # Such a tenant was skipped because another claim held it: ask again soon.
    contended: bool = False


async def claim(
    connection: Connection,
    owner: str,
    lease_seconds: float,
    limit: int,
    tenant_defaults: tuple[int, float] = (0, 1.0),
) -> list[ClaimedJob]:
    """Claim up to `limit` jobs (claim_jobs)."""
    return (await claim_jobs(connection, owner, lease_seconds, limit, tenant_defaults)).jobs


async def claim_jobs(
    connection: Connection,
    owner: str,
    lease_seconds: float,
    limit: int,
    tenant_defaults: tuple[int, float] = (0, 1.0),
) -> Claim:
    """Claim up to `limit` jobs, fairly among tenants (lifecycle.CLAIM), each with a fresh
    gateway token (only its hash is stored). `tenant_defaults`: a tenant's running quota
    and share where it sets none (TENANT_MAX_RUNNING, TENANT_SHARE)."""
    minted = [gateway_tokens.mint() for _ in range(limit)]
    hashes = [gateway_tokens.digest(token) for token in minted]
    max_running, share = tenant_defaults
    rows = await connection.fetch(
        lifecycle.CLAIM,
        *(owner, lease_seconds, limit, hashes, channels.JOB_EVENT, max_running, share),
    )
    claimed = []
    for row in rows:
        if row["job_id"] is None:
            continue  # nothing was claimed: the row says only whether some is held back
        fields = {field: row[field] for field in CLAIMED_FIELDS}
        fields["gateway_token"] = minted[row["n"] - 1]
        claimed.append(ClaimedJob(**fields))
    first = rows[0] if rows else None
    return Claim(claimed, bool(first and first["held_back"]), bool(first and first["contended"]))


async def heartbeat(connection: Connection, tokens: list[UUID], lease_seconds: float) -> set[UUID]:
    """Extend the leases still held; returns the tokens that are."""
    rows = await connection.fetch(HEARTBEAT, tokens, lease_seconds)
    return {row["lease_token"] for row in rows}


@dataclass(frozen=True)
class FinishOf:
    """One owner's terminal write: the job, the lease token that fences it, the outcome."""

    job_id: str
    token: UUID
    outcome: Finish


async def finish(connection: Connection, job_id: str, token: UUID, outcome: Finish) -> bool:
    """Write a terminal outcome; False when fenced off (lease lost, cancelled)."""
    return (await finish_many(connection, [FinishOf(job_id, token, outcome)]))[0]


async def finish_many(connection: Connection, writes: list[FinishOf]) -> list[bool]:
    """lifecycle.FINISH for each write, atomically (one round trip, one commit); per write, whether
    it changed the row."""
    rows = await connection.fetchmany(lifecycle.FINISH, [_finish_args(write) for write in writes])
    finished = {row["job_id"] for row in rows}
    return [write.job_id in finished for write in writes]


def _finish_args(write: FinishOf) -> tuple[Any, ...]:
    outcome = write.outcome
    return (
        write.job_id,
        write.token,
        outcome.status,
        outcome.exit_code,
        outcome.result,
        outcome.error,
        outcome.failure_reason,
        outcome.usage,
        outcome.duration_ms,
        channels.JOB_FINISHED,
    )


async def release(connection: Connection, job_id: str, token: UUID) -> str | None:
    """Requeue or fail a job this replica holds; returns its new status, None if fenced off."""
    rows = await connection.fetch(
        lifecycle.RELEASE,
        lifecycle.LOST_BY_STOP,
        channels.JOB_PENDING,
        channels.JOB_FINISHED,
        job_id,
        token,
    )
    return str(rows[0]["status"]) if rows else None


async def requeue(connection: Connection, job_id: str, token: UUID) -> bool:
    """Give a job this replica holds back to the queue, its attempt not counted (the
    infrastructure failed, not the job); False if fenced off."""
    rows = await connection.fetch(lifecycle.REQUEUE, job_id, token, channels.JOB_PENDING)
    return bool(rows)


async def reap(connection: Connection, adopt_grace: float = 0.0) -> dict[str, str]:
    """Release every job whose lease expired (one with a container `adopt_grace` seconds
    later, see lifecycle.REAP); returns job_id -> new status."""
    rows = await connection.fetch(
        lifecycle.REAP,
        lifecycle.LOST_BY_LEASE,
        channels.JOB_PENDING,
        channels.JOB_FINISHED,
        adopt_grace,
    )
    return {row["job_id"]: row["status"] for row in rows}


# --- adoption (tower/queue/adoption.py) ---------------------------------------------------

# Jobs a replica on Docker host $1 may adopt: running, lease expired, with a busy pool
# slot of this host holding the job's lease token and a container. Read without locks:
# the adopter checks each container, then ADOPT re-checks all of it under the row locks.
# None in the first lease ($2 seconds) after PostgreSQL started: every lease lapsed while
# it was down, and live owners renew within that lease (taking a live owner's job would
# have it kill its container when it finds its lease gone).
ADOPTABLE = """
SELECT j.job_id, j.lease_token, s.container_id,
       coalesce(jsonb_typeof(j.request -> 'output'), 'null') <> 'null' AS publishes
FROM jobs AS j
JOIN pool_slots AS s ON s.job_id = j.job_id AND s.lease_token = j.lease_token
WHERE j.status = 'running' AND j.lease_until < now()
  AND s.docker_host = $1 AND s.status = 'busy' AND s.container_id IS NOT NULL
  AND now() >= pg_postmaster_start_time() + make_interval(secs => $2)
"""

# How many bytes of each stream the job's log holds: an adopter replaying the container's
# output from its start skips that much, so no event is stored twice.
STORED_LOG_BYTES = """
SELECT data ->> 'stream' AS stream, sum(octet_length(data ->> 'text'))::bigint AS bytes
FROM job_events WHERE job_id = $1 AND kind = 'log'
GROUP BY data ->> 'stream'
"""


@dataclass(frozen=True)
class Orphan:
    """A job whose lease lapsed while its container is on this Docker host."""

    job_id: str
    lease_token: UUID
    container_id: str
    # A repository job that pushes a branch: not adopted (its clone died with its tower).
    publishes: bool = False


@dataclass(frozen=True)
class Adopted:
    """A job this replica took over: the job (new lease token, same attempt), its
    container and slot, and when it started (epoch seconds)."""

    job: ClaimedJob
    slot_id: str
    container_id: str
    started_epoch: float


async def adoptable(connection: Connection, docker_host: str, lease_seconds: float) -> list[Orphan]:
    rows = await connection.fetch(ADOPTABLE, docker_host, lease_seconds)
    return [
        Orphan(row["job_id"], row["lease_token"], row["container_id"], row["publishes"])
        for row in rows
    ]


async def adopt(
    connection: Connection,
    owner: str,
    lease_seconds: float,
    docker_host: str,
    orphans: list[Orphan],
) -> list[Adopted]:
    """lifecycle.ADOPT for the orphans still as found; returns those now this replica's."""
    rows = await connection.fetch(
        lifecycle.ADOPT,
        owner,
        lease_seconds,
        docker_host,
        [orphan.job_id for orphan in orphans],
        [orphan.lease_token for orphan in orphans],
    )
    return [_adopted(row) for row in rows]


def _adopted(row: Any) -> Adopted:
    fields = {field: row[field] for field in CLAIMED_FIELDS if field != "queued_seconds"}
    job = ClaimedJob(**fields)
    return Adopted(job, row["slot_id"], row["container_id"], row["started_epoch"])


async def stored_log_bytes(connection: Connection, job_id: str) -> dict[str, int]:
    """Bytes of the job's stored log per stream (its text as UTF-8)."""
    rows = await connection.fetch(STORED_LOG_BYTES, job_id)
    return {row["stream"]: int(row["bytes"]) for row in rows}


async def database_settling(connection: Connection, lease_seconds: float) -> bool:
    """Whether the database started less than a lease ago (DATABASE_SETTLING)."""
    settling: bool = await connection.fetchval(DATABASE_SETTLING, lease_seconds)
    return settling


async def try_retention_lock(connection: Connection) -> bool:
    locked: bool = await connection.fetchval(TRY_RETENTION_LOCK, RETENTION_LOCK_KEY)
    return locked


async def delete_expired_jobs(
    connection: Connection, ttl_hours: int, idempotency_ttl_hours: int
) -> int:
    """Finished jobs older than `ttl_hours`, but not one whose idempotency key is live."""
    deleted: int = await connection.fetchval(DELETE_EXPIRED_JOBS, ttl_hours, idempotency_ttl_hours)
    return deleted


async def delete_surplus_jobs(connection: Connection, keep: int, idempotency_ttl_hours: int) -> int:
    """Finished jobs beyond the newest `keep`, but not one whose idempotency key is live."""
    deleted: int = await connection.fetchval(DELETE_SURPLUS_JOBS, keep, idempotency_ttl_hours)
    return deleted


async def delete_expired_idempotency_keys(connection: Connection, ttl_hours: int) -> int:
    return _count(await connection.execute(DELETE_EXPIRED_IDEMPOTENCY_KEYS, ttl_hours))


def _count(status: str) -> int:
    # asyncpg returns the command tag, e.g. "DELETE 3".
    return int(status.rsplit(" ", 1)[-1])
