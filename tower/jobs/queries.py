"""The jobs API's SQL. Inserting and cancelling change a job's status: their statements
are in tower/db/lifecycle.py, run from here."""

from __future__ import annotations

from typing import Any

from tower.db import lifecycle
from tower.db.pool import Connection
from tower.webhooks.queries import DELIVERIES_OF_JOB

# Longest result/error preview in list rows; GET /jobs/{id} has the whole text.
LIST_TEXT_LIMIT = 2000


async def insert_job(connection: Connection, values: tuple[Any, ...]) -> None:
    await connection.execute(lifecycle.INSERT_JOB, *values)


async def insert_jobs(connection: Connection, rows: list[tuple[Any, ...]]) -> list[None]:
    """INSERT_JOB for each row (its parameters), atomically: one round trip, one commit."""
    await connection.executemany(lifecycle.INSERT_JOB, rows)
    return [None] * len(rows)


# A key younger than the TTL; older keys count as absent until retention deletes them.
FIND_IDEMPOTENCY_KEY = """
SELECT job_id, request_hash FROM idempotency_keys
WHERE key = $1 AND created_at > now() - make_interval(hours => $2)
"""

# Take the key for our new job, or take over an expired one. When a concurrent
# transaction holds the same key, PostgreSQL makes this wait for it to end; if it
# committed a live key, no row comes back and the caller replays that key instead.
CLAIM_IDEMPOTENCY_KEY = """
INSERT INTO idempotency_keys (key, request_hash, job_id) VALUES ($1, $2, $3)
ON CONFLICT (key) DO UPDATE
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
exit_code, attempt, max_attempts, failure_reason, usage, duration_ms, ran_by
"""

# The request's echoed fields come out of the jsonb; the prompt only as its length.
SELECT_JOB = f"""
SELECT {_SUMMARY_COLUMNS}, result, error,
       request - 'prompt' - 'system_prompt' - 'mcp_config' AS echo,
       coalesce(length(request ->> 'prompt'), 0) AS prompt_chars,
       {DELIVERIES_OF_JOB} AS webhook_deliveries
FROM jobs WHERE job_id = $1
"""

SELECT_STATUS = "SELECT status FROM jobs WHERE job_id = $1"


async def cancel_job(connection: Connection, job_id: str) -> bool:
    """Cancel a live job and tell its owner and waiters; False when it is not live."""
    if await connection.fetchval(lifecycle.CANCEL_JOB, job_id) is None:
        return False
    await connection.execute(lifecycle.NOTIFY_CANCELLED, job_id)
    return True


def _list_filter(status: bool, agent_id: bool) -> tuple[str, int]:
    """WHERE clause for the filters given, and the next free parameter number.

    Only the filters in use appear in the SQL, so each combination gets a plan that
    uses its index (jobs_status_created, jobs_agent_created, jobs_created).
    """
    clauses: list[str] = []
    if status:
        clauses.append(f"status = ${len(clauses) + 1}")
    if agent_id:
        clauses.append(f"agent_id = ${len(clauses) + 1}")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    return where, len(clauses) + 1


def count_jobs(*, status: bool, agent_id: bool) -> str:
    where, _ = _list_filter(status, agent_id)
    return f"SELECT count(*) FROM jobs {where}"


def list_jobs(*, status: bool, agent_id: bool) -> str:
    """Newest first; job_id breaks ties so pages never overlap. Params: filters, limit, offset."""
    where, next_param = _list_filter(status, agent_id)
    return f"""
SELECT {_SUMMARY_COLUMNS},
       left(result, {LIST_TEXT_LIMIT}) AS result, left(error, {LIST_TEXT_LIMIT}) AS error,
       coalesce(length(result) > {LIST_TEXT_LIMIT} OR length(error) > {LIST_TEXT_LIMIT}, false)
           AS truncated
FROM jobs {where}
ORDER BY created_at DESC, job_id DESC
LIMIT ${next_param} OFFSET ${next_param + 1}
"""
