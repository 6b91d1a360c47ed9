"""All queue SQL: claiming, leases, finishing, reaping, retention.

Every write by a job's owner is fenced by its lease token and `status = 'running'`:
a replica that lost its lease, or whose job was cancelled, changes nothing. Terminal
states are final because no statement here matches a terminal row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from tower.db import channels
from tower.db.pool import Connection
from tower.events.queries import EVENT_SEQ, JOBS_STATE_RETURNING, insert_state_event
from tower.execution.runner import ClaimedJob
from tower.gateway import tokens as gateway_tokens
from tower.jobs import queries as job_queries
from tower.webhooks.outbox import TERMINAL_COLUMNS, WAKE_DELIVERERS, outbox_cte

TERMINAL = "('completed', 'failed', 'cancelled')"
# Job ids per NOTIFY payload: 64 of at most 78 characters stay under PostgreSQL's 8000 bytes.
ANNOUNCE_BATCH = 64

# The picked rows are MATERIALIZED so the LIMIT ... SKIP LOCKED subquery runs exactly
# once: planned as a rescanned semi-join it could lock and update more than $3 rows.
# Each claimed row gets the n-th of the gateway token hashes in $4 (tokens are minted
# by tower, which keeps the plain tokens; row n of the claim is handed token n), and
# its 'running' event. The events are announced on $5 by the batch (one NOTIFY per
# ANNOUNCE_BATCH jobs: each NOTIFY is work for every replica's listener).
CLAIM = f"""
WITH picked AS MATERIALIZED (
    SELECT job_id FROM jobs
    WHERE status = 'pending' AND run_after <= now()
    ORDER BY priority DESC, created_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), numbered AS (
    SELECT job_id, row_number() OVER () AS n FROM picked
), claimed AS (
    UPDATE jobs SET
        status = 'running',
        lease_owner = $1,
        ran_by = $1,
        lease_token = gen_random_uuid(),
        lease_until = now() + make_interval(secs => $2),
        attempt = attempt + 1,
        started_at = now(),
        gateway_token_sha256 = ($4::text[])[numbered.n],
        event_seq = event_seq + 1
    FROM numbered
    WHERE jobs.job_id = numbered.job_id
    RETURNING jobs.request, jobs.lease_token, numbered.n, {JOBS_STATE_RETURNING},
              extract(epoch FROM now() - jobs.run_after)::float8 AS queued_seconds
),
state_event AS ({insert_state_event("claimed")}),
announced AS (
    SELECT pg_notify($5, 'state ' || string_agg(job_id, ' ')) FROM claimed
    GROUP BY (n - 1) / {ANNOUNCE_BATCH}
)
SELECT job_id, agent_id, engine, profile, request, attempt, lease_token, n, queued_seconds,
       (SELECT count(*) FROM announced) AS announcements
FROM claimed
"""

# Tokens are unique, so the token alone fences; status keeps cancelled jobs out.
HEARTBEAT = """
UPDATE jobs SET lease_until = now() + make_interval(secs => $2)
WHERE lease_token = ANY($1::uuid[]) AND status = 'running'
RETURNING lease_token
"""

# The state event, the NOTIFY and the webhook outbox row (tower/webhooks/outbox.py) are
# part of the same statement, so they happen if and only if the row changed. The gateway
# token dies with the attempt: every write that ends one clears its hash.
# It returns the job_id it finished, so a batch of them says which ones were written.
FINISH = f"""
WITH finished AS (
    UPDATE jobs SET
        status = $3, exit_code = $4, result = $5, error = $6, failure_reason = $7,
        usage = $8, duration_ms = $9, finished_at = now(), event_seq = event_seq + 1,
        lease_owner = NULL, lease_token = NULL, lease_until = NULL,
        gateway_token_sha256 = NULL
    WHERE job_id = $1 AND lease_token = $2 AND status = 'running'
    RETURNING {TERMINAL_COLUMNS}, {EVENT_SEQ}
),
state_event AS ({insert_state_event("finished")}),
{outbox_cte("finished")}
SELECT job_id, pg_notify($10, job_id), {WAKE_DELIVERERS} FROM finished
"""

# Give a running job back: to the queue if it has attempts left, else failed as
# 'tower_lost'. Shared by the reaper (lease expired) and a replica's clean stop.
_RELEASE_SET = """
    status = CASE WHEN attempt < max_attempts THEN 'pending' ELSE 'failed' END,
    run_after = now(),
    finished_at = CASE WHEN attempt < max_attempts THEN NULL ELSE now() END,
    failure_reason = CASE WHEN attempt < max_attempts THEN NULL ELSE 'tower_lost' END,
    error = CASE WHEN attempt < max_attempts THEN NULL ELSE $1 END,
    event_seq = event_seq + 1,
    lease_owner = NULL, lease_token = NULL, lease_until = NULL,
    gateway_token_sha256 = NULL
"""

# The state event of each job handed back (pending again, or failed). A requeued job
# wakes the dispatchers; a failed one wakes its waiters (and gets its webhook queued,
# in the same statement).
_RELEASE_NOTIFY = f"""
state_event AS ({insert_state_event("released")}),
{outbox_cte("released")}
SELECT job_id, status,
       pg_notify(CASE WHEN status = 'pending' THEN $2 ELSE $3 END, job_id),
       {WAKE_DELIVERERS}
FROM released
"""

RELEASE = f"""
WITH released AS (
    UPDATE jobs SET {_RELEASE_SET}
    WHERE job_id = $4 AND lease_token = $5 AND status = 'running'
    RETURNING {TERMINAL_COLUMNS}, {EVENT_SEQ}
),
{_RELEASE_NOTIFY}
"""

# Safe when reapers race: the loser's UPDATE re-checks the WHERE on the winner's row
# version, which is no longer running with an expired lease, and skips it.
REAP = f"""
WITH released AS (
    UPDATE jobs SET {_RELEASE_SET}
    WHERE status = 'running' AND lease_until < now()
    RETURNING {TERMINAL_COLUMNS}, {EVENT_SEQ}
),
{_RELEASE_NOTIFY}
"""

PING = "SELECT 1"

LOST_BY_STOP = "The tower running this job stopped before it finished"
LOST_BY_LEASE = "The tower running this job stopped renewing its lease"

# One replica at a time runs retention; the others skip this round.
TRY_RETENTION_LOCK = "SELECT pg_try_advisory_xact_lock($1)"
RETENTION_LOCK_KEY = 727_002

# Cancelled-while-pending jobs may lack finished_at; their age is then their creation.
DELETE_EXPIRED_JOBS = f"""
DELETE FROM jobs
WHERE status IN {TERMINAL}
  AND coalesce(finished_at, created_at) < now() - make_interval(hours => $1)
"""

DELETE_SURPLUS_JOBS = f"""
DELETE FROM jobs WHERE job_id IN (
    SELECT job_id FROM jobs
    WHERE status IN {TERMINAL}
    ORDER BY coalesce(finished_at, created_at) DESC, job_id DESC
    OFFSET $1
)
"""

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


async def claim(
    connection: Connection, owner: str, lease_seconds: float, limit: int
) -> list[ClaimedJob]:
    """Claim up to `limit` jobs, each with a fresh gateway token (only its hash is stored)."""
    minted = [gateway_tokens.mint() for _ in range(limit)]
    hashes = [gateway_tokens.digest(token) for token in minted]
    rows = await connection.fetch(CLAIM, owner, lease_seconds, limit, hashes, channels.JOB_EVENT)
    claimed = []
    for row in rows:
        fields = {field: row[field] for field in CLAIMED_FIELDS}
        fields["gateway_token"] = minted[row["n"] - 1]
        claimed.append(ClaimedJob(**fields))
    return claimed


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
    """FINISH for each write, atomically (one round trip, one commit); per write, whether
    it changed the row."""
    rows = await connection.fetchmany(FINISH, [_finish_args(write) for write in writes])
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
        RELEASE, LOST_BY_STOP, channels.JOB_PENDING, channels.JOB_FINISHED, job_id, token
    )
    return str(rows[0]["status"]) if rows else None


async def reap(connection: Connection) -> dict[str, str]:
    """Release every job whose lease expired; returns job_id -> new status."""
    rows = await connection.fetch(REAP, LOST_BY_LEASE, channels.JOB_PENDING, channels.JOB_FINISHED)
    return {row["job_id"]: row["status"] for row in rows}


async def try_retention_lock(connection: Connection) -> bool:
    locked: bool = await connection.fetchval(TRY_RETENTION_LOCK, RETENTION_LOCK_KEY)
    return locked


async def delete_expired_jobs(connection: Connection, ttl_hours: int) -> int:
    return _count(await connection.execute(DELETE_EXPIRED_JOBS, ttl_hours))


async def delete_surplus_jobs(connection: Connection, keep: int) -> int:
    return _count(await connection.execute(DELETE_SURPLUS_JOBS, keep))


async def delete_expired_idempotency_keys(connection: Connection, ttl_hours: int) -> int:
    return _count(await connection.execute(DELETE_EXPIRED_IDEMPOTENCY_KEYS, ttl_hours))


def _count(status: str) -> int:
    # asyncpg returns the command tag, e.g. "DELETE 3".
    return int(status.rsplit(" ", 1)[-1])
