"""The jobs API's SQL. Inserting and cancelling change a job's status: their statements
are in tower/db/lifecycle.py, run from here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from tower.db import lifecycle
from tower.db.effects import EGRESS_SUMMARY
from tower.db.pool import Connection
from tower.webhooks.queries import DELIVERIES_OF_JOB

# Longest result/error preview in list rows; GET /jobs/{id} has the whole text.
LIST_TEXT_LIMIT = 2000


# INSERT_JOB's parameters come first in a job's row; then, optionally, its inputs.
JOB_PARAMS = 9

# A job's inputs, in the request's order ($2, $3: upload ids and paths). An upload deleted
# since the submit checked it is stored as NULL, so the job fails at staging saying so,
# rather than its foreign key failing the batch the job was inserted with.
INSERT_JOB_INPUTS = """
INSERT INTO job_inputs (job_id, position, upload_id, path)
SELECT $1, i.ord - 1, (SELECT upload_id FROM uploads WHERE upload_id = i.upload_id), i.path
FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS i(upload_id, path, ord)
"""


class JobRow(NamedTuple):
    """INSERT_JOB's parameters, and the job's inputs as (upload id, path) pairs."""

    job_id: str
    agent_id: str
    engine: str
    profile: str
    request: dict[str, Any]
    priority: int
    max_attempts: int
    tenant: str
    # The name of the key that submitted it.
    submitted_by: str | None
    inputs: tuple[tuple[str, str], ...] = ()


async def insert_job(connection: Connection, row: Sequence[Any]) -> None:
    """One job and its inputs; the caller holds the transaction."""
    await connection.execute(lifecycle.INSERT_JOB, *row[:JOB_PARAMS])
    inputs = _inputs_of([row])
    if inputs:
        await connection.executemany(INSERT_JOB_INPUTS, inputs)


async def insert_jobs(connection: Connection, rows: Sequence[Sequence[Any]]) -> list[None]:
    """INSERT_JOB for each row (its parameters), atomically: one round trip, one commit.
    Rows with inputs add a statement, so they share a transaction with their jobs."""
    inputs = _inputs_of(rows)
    if not inputs:
        await connection.executemany(lifecycle.INSERT_JOB, [row[:JOB_PARAMS] for row in rows])
        return [None] * len(rows)
    async with connection.transaction():
        await connection.executemany(lifecycle.INSERT_JOB, [row[:JOB_PARAMS] for row in rows])
        await connection.executemany(INSERT_JOB_INPUTS, inputs)
    return [None] * len(rows)


def _inputs_of(rows: Sequence[Sequence[Any]]) -> list[tuple[str, list[str], list[str]]]:
    """INSERT_JOB_INPUTS's parameters for the rows that have inputs."""
    return [
        (row[0], [upload for upload, _ in row[JOB_PARAMS]], [path for _, path in row[JOB_PARAMS]])
        for row in rows
        if len(row) > JOB_PARAMS and row[JOB_PARAMS]
    ]


# A key of the tenant $3 younger than the TTL; older keys count as absent until
# retention deletes them.
FIND_IDEMPOTENCY_KEY = """
SELECT job_id, request_hash FROM idempotency_keys
WHERE key = $1 AND created_at > now() - make_interval(hours => $2) AND tenant = $3
"""

# Take the key for our new job, or take over an expired one. When a concurrent
# transaction holds the same key, PostgreSQL makes this wait for it to end; if it
# committed a live key, no row comes back and the caller replays that key instead.
# A key is the tenant's ($5): another tenant's same key is another row.
CLAIM_IDEMPOTENCY_KEY = """
INSERT INTO idempotency_keys (key, request_hash, job_id, tenant) VALUES ($1, $2, $3, $5)
ON CONFLICT (tenant, key) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, job_id = EXCLUDED.job_id, created_at = now()
    WHERE idempotency_keys.created_at <= now() - make_interval(hours => $4)
RETURNING job_id
"""

# Run by the retention job; $1 is the TTL in hours.
DELETE_EXPIRED_IDEMPOTENCY_KEYS = """
DELETE FROM idempotency_keys WHERE created_at <= now() - make_interval(hours => $1)
"""

_SUMMARY_COLUMNS = """
job_id, status, agent_id, engine, profile, priority, created_at, started_at, finished_at,
exit_code, attempt, max_attempts, failure_reason, usage, duration_ms, ran_by,
session_id, parent_job_id, turn, tenant, submitted_by
"""

# Every read of one job is its caller's tenant's ($2; NULL for a key that sees every
# tenant): another tenant's job is not found.
_SEEN = "($2::text IS NULL OR tenant = $2)"

# The request's echoed fields come out of the jsonb; the prompt only as its length.
SELECT_JOB = f"""
SELECT {_SUMMARY_COLUMNS}, result, error, artifacts, published,
       {EGRESS_SUMMARY} AS egress_usage,
       request - 'prompt' - 'system_prompt' - 'mcp_config' AS echo,
       coalesce(length(request ->> 'prompt'), 0) AS prompt_chars,
       {DELIVERIES_OF_JOB} AS webhook_deliveries
FROM jobs WHERE job_id = $1 AND {_SEEN}
"""

SELECT_STATUS = f"SELECT status FROM jobs WHERE job_id = $1 AND {_SEEN}"


async def cancel_job(connection: Connection, job_id: str, tenant: str | None) -> bool:
    """Cancel a live job of the tenant (None: any) and tell its owner and waiters; False
    when it is not live, or another tenant's."""
    if await connection.fetchval(lifecycle.CANCEL_JOB, job_id, tenant) is None:
        return False
    await connection.execute(lifecycle.NOTIFY_CANCELLED, job_id)
    return True


def _list_filter(
    status: bool, agent_id: bool, session_id: bool = False, tenant: bool = False
) -> tuple[str, int]:
    """WHERE clause for the filters given, and the next free parameter number.

    Only the filters in use appear in the SQL, so each combination gets a plan that
    uses its index (jobs_status_created, jobs_agent_created, jobs_session,
    jobs_tenant_created, jobs_created).
    """
    clauses: list[str] = []
    if tenant:
        clauses.append(f"tenant = ${len(clauses) + 1}")
    if status:
        clauses.append(f"status = ${len(clauses) + 1}")
    if agent_id:
        clauses.append(f"agent_id = ${len(clauses) + 1}")
    if session_id:
        clauses.append(f"session_id = ${len(clauses) + 1}")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    return where, len(clauses) + 1


def count_jobs(
    *, status: bool, agent_id: bool, session_id: bool = False, tenant: bool = False
) -> str:
    where, _ = _list_filter(status, agent_id, session_id, tenant)
    return f"SELECT count(*) FROM jobs {where}"


def list_jobs(
    *, status: bool, agent_id: bool, session_id: bool = False, tenant: bool = False
) -> str:
    """Newest first; job_id breaks ties so pages never overlap. Params: filters (the
    tenant first), limit, offset."""
    where, next_param = _list_filter(status, agent_id, session_id, tenant)
    return f"""
SELECT {_SUMMARY_COLUMNS},
       left(result, {LIST_TEXT_LIMIT}) AS result, left(error, {LIST_TEXT_LIMIT}) AS error,
       coalesce(length(result) > {LIST_TEXT_LIMIT} OR length(error) > {LIST_TEXT_LIMIT}, false)
           AS truncated
FROM jobs {where}
ORDER BY created_at DESC, job_id DESC
LIMIT ${next_param} OFFSET ${next_param + 1}
"""


# A continued job's place in its session, written in the transaction that inserted it
# (no status changes: INSERT_JOB made it pending). $1 job, $2 session, $3 parent, $4 turn.
SET_SESSION = """
UPDATE jobs SET session_id = $2, parent_job_id = $3, turn = $4 WHERE job_id = $1
"""

# The first continue of a job makes it turn 1 of a session named after it.
START_SESSION = """
UPDATE jobs SET session_id = job_id, turn = 1 WHERE job_id = $1 AND session_id IS NULL
"""
