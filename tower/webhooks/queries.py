"""Every SQL statement of webhook delivery (tables webhook_deliveries, webhook_attempts).

A delivery is held by the replica sending it through `attempts`: claiming bumps it and
pushes next_attempt_at (and locked_until) one lease ahead, so the row drops out of the
due set; the holder's final write is fenced by the attempt number it claimed. A replica
that dies mid-send leaves the row to come due again when that lease lapses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tower.db.effects import TERMINAL_COLUMNS, WAKE_DELIVERERS, outbox_cte
from tower.db.pool import Connection, Pool
from tower.db.statuses import TERMINAL_SQL

# What an attempt row says until its sender records the answer: true while in flight,
# and still true if the sending replica died before it could write anything.
UNANSWERED = "no answer recorded (in flight, or the tower sending it stopped)"

# $1 free slots, $2 lease seconds, $3 UNANSWERED, $4 max attempts. The due rows are
# MATERIALIZED so LIMIT ... SKIP LOCKED runs once (as in the job claim). Rows whose
# last attempt was lost with its replica and that have no attempt left are failed here.
CLAIM_DUE = """
WITH due AS MATERIALIZED (
    SELECT delivery_id FROM webhook_deliveries
    WHERE status = 'pending' AND next_attempt_at <= now() AND attempts < $4
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
exhausted AS (
    UPDATE webhook_deliveries SET status = 'failed', locked_until = NULL
    WHERE status = 'pending' AND next_attempt_at <= now() AND attempts >= $4
),
claimed AS (
    UPDATE webhook_deliveries AS d SET
        attempts = d.attempts + 1,
        locked_until = now() + make_interval(secs => $2),
        next_attempt_at = now() + make_interval(secs => $2)
    FROM due
    WHERE d.delivery_id = due.delivery_id
    RETURNING d.delivery_id, d.job_id, d.event_type, d.url, d.payload, d.attempts
),
opened AS (
    INSERT INTO webhook_attempts (delivery_id, attempt, error, duration_ms)
    SELECT delivery_id, attempts, $3, 0 FROM claimed
)
SELECT delivery_id, job_id, event_type, url, payload, attempts AS attempt FROM claimed
"""

# The attempt's answer is recorded whatever happened since (it did happen); the
# delivery moves on only if this replica still holds it ($2 = the attempt it claimed).
# $3 new status ('pending' = retry after $4 seconds).
COMPLETE = """
WITH recorded AS (
    UPDATE webhook_attempts SET status_code = $5, error = $6, duration_ms = $7
    WHERE delivery_id = $1 AND attempt = $2
)
UPDATE webhook_deliveries SET
    status = $3,
    next_attempt_at = CASE WHEN $3 = 'pending'
                           THEN now() + make_interval(secs => $4) ELSE next_attempt_at END,
    delivered_at = CASE WHEN $3 = 'delivered' THEN now() END,
    locked_until = NULL
WHERE delivery_id = $1 AND attempts = $2 AND status = 'pending'
RETURNING delivery_id
"""

# A replica stopping cleanly hands its in-flight deliveries back at once.
RELEASE = """
UPDATE webhook_deliveries SET next_attempt_at = now(), locked_until = NULL
WHERE delivery_id = $1 AND attempts = $2 AND status = 'pending'
"""

# Seconds until the next pending delivery comes due (negative: overdue; NULL: none).
NEXT_DUE = """
SELECT extract(epoch FROM min(next_attempt_at) - now())::float8
FROM webhook_deliveries WHERE status = 'pending'
"""

# A new delivery of a terminal job's event, built from the row as the terminal write did,
# unless the job already has $2 deliveries (LOCK_JOB_WEBHOOK ran first in the same
# transaction, so concurrent redeliveries count one after another).
REDELIVER = f"""
WITH source AS (
    SELECT {TERMINAL_COLUMNS} FROM jobs WHERE job_id = $1 AND status IN {TERMINAL_SQL}
    AND (SELECT count(*) FROM webhook_deliveries WHERE job_id = $1) < $2
),
{outbox_cte("source")}
SELECT delivery_id, {WAKE_DELIVERERS} FROM outbox
"""

# Locks the job row against other redeliveries until the transaction ends (NO KEY: the
# foreign keys of rows inserted meanwhile are not blocked). Under READ COMMITTED each
# later statement sees what a redelivery that held the lock before committed.
# $2: the caller's tenant (NULL: a key that sees every tenant); another's job is not found.
LOCK_JOB_WEBHOOK = """
SELECT status, request ->> 'webhook_url' AS webhook_url FROM jobs
WHERE job_id = $1 AND ($2::text IS NULL OR tenant = $2)
FOR NO KEY UPDATE
"""

# A job's deliveries with their attempts, as one jsonb array (a scalar subquery of the
# job's SELECT, correlated on jobs.job_id): the record costs no extra round trip.
DELIVERIES_OF_JOB = """
(SELECT coalesce(jsonb_agg(jsonb_build_object(
        'delivery_id', d.delivery_id, 'event_type', d.event_type, 'status', d.status,
        'created_at', d.created_at, 'delivered_at', d.delivered_at,
        'next_attempt_at', CASE WHEN d.status = 'pending' THEN d.next_attempt_at END,
        'attempts', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                    'attempt', a.attempt, 'attempted_at', a.attempted_at,
                    'status_code', a.status_code, 'error', a.error,
                    'duration_ms', a.duration_ms) ORDER BY a.attempt), '[]'::jsonb)
            FROM webhook_attempts a WHERE a.delivery_id = d.delivery_id))
        ORDER BY d.created_at, d.delivery_id), '[]'::jsonb)
 FROM webhook_deliveries d WHERE d.job_id = jobs.job_id)
"""


@dataclass(frozen=True)
class Claimed:
    delivery_id: str
    job_id: str
    event_type: str
    url: str
    payload: dict[str, Any]
    attempt: int


@dataclass(frozen=True)
class Answer:
    """How one attempt ended, and what the delivery becomes."""

    status: str  # pending (retry), delivered, failed, stopped
    retry_in: float
    status_code: int | None
    error: str | None
    duration_ms: int


async def claim_due(
    connection: Connection, free: int, lease_seconds: float, max_attempts: int
) -> list[Claimed]:
    rows = await connection.fetch(CLAIM_DUE, free, lease_seconds, UNANSWERED, max_attempts)
    return [Claimed(**dict(row)) for row in rows]


async def complete(connection: Connection, claimed: Claimed, answer: Answer) -> bool:
    """Record the attempt; False if the delivery was no longer ours to move on."""
    row = await connection.fetchrow(
        COMPLETE,
        claimed.delivery_id,
        claimed.attempt,
        answer.status,
        answer.retry_in,
        answer.status_code,
        answer.error,
        answer.duration_ms,
    )
    return row is not None


async def release(connection: Connection, claimed: Claimed) -> None:
    await connection.execute(RELEASE, claimed.delivery_id, claimed.attempt)


async def seconds_to_next_due(pool: Pool) -> float | None:
    value = await pool.fetchval(NEXT_DUE)
    return None if value is None else float(value)


async def redeliver(connection: Connection, job_id: str, max_deliveries: int) -> str | None:
    """The new delivery's id; None if the job is not terminal, has no webhook_url or
    already has `max_deliveries` deliveries."""
    row = await connection.fetchrow(REDELIVER, job_id, max_deliveries)
    return None if row is None else str(row["delivery_id"])


async def lock_job_webhook(
    connection: Connection, job_id: str, tenant: str | None
) -> tuple[str, str | None] | None:
    row = await connection.fetchrow(LOCK_JOB_WEBHOOK, job_id, tenant)
    return None if row is None else (str(row["status"]), row["webhook_url"])
