"""The outbox insert that rides on every statement making a job terminal.

A job's terminal write (finish, cancel, reap, release) RETURNs TERMINAL_COLUMNS from a
CTE; `outbox_cte(<that CTE>)` inserts one delivery per returned row that is terminal
and has a webhook_url, in the same statement and so the same transaction. For a job
without a webhook_url it inserts nothing: the queue's hot path pays one empty scan of
the rows it just returned. WAKE_DELIVERERS sends NOTIFY only when a row was inserted.
"""

from __future__ import annotations

from tower.db.channels import WEBHOOK_DUE

# What a terminal UPDATE (or the redeliver SELECT) returns for the outbox to read.
TERMINAL_COLUMNS = """
jobs.job_id, jobs.status, jobs.request ->> 'webhook_url' AS webhook_url,
jobs.agent_id, jobs.engine, jobs.profile, jobs.exit_code, jobs.result, jobs.error,
jobs.failure_reason, jobs.usage, jobs.duration_ms, jobs.attempt,
jobs.created_at, jobs.started_at, jobs.finished_at
"""

# The Standard Webhooks envelope: type, timestamp, data. Stored whole, sent as stored.
_PAYLOAD = """
jsonb_build_object(
    'type', 'job.' || status,
    'timestamp', coalesce(finished_at, now()),
    'data', jsonb_build_object(
        'job_id', job_id, 'status', status, 'agent_id', agent_id, 'engine', engine,
        'profile', profile, 'exit_code', exit_code, 'failure_reason', failure_reason,
        'error', error, 'result', result, 'usage', usage, 'duration_ms', duration_ms,
        'attempt', attempt, 'created_at', created_at, 'started_at', started_at,
        'finished_at', finished_at))
"""

# Standard Webhooks message ids look like msg_<random>; this one is the delivery's key.
NEW_DELIVERY_ID = "'msg_' || replace(gen_random_uuid()::text, '-', '')"


def outbox_cte(source: str) -> str:
    """`outbox AS (...)`: queue a delivery for each terminal row of `source` with a URL."""
    return f"""outbox AS (
    INSERT INTO webhook_deliveries (delivery_id, job_id, event_type, url, payload)
    SELECT {NEW_DELIVERY_ID}, job_id, 'job.' || status, webhook_url, {_PAYLOAD}
    FROM {source}
    WHERE webhook_url IS NOT NULL AND status IN ('completed', 'failed', 'cancelled')
    RETURNING delivery_id
)"""


# A scalar for the statement's final SELECT: one NOTIFY if the outbox got rows, else none.
# (A data-modifying CTE runs to completion whether or not it is read; this reads it only
# to decide on the NOTIFY.)
WAKE_DELIVERERS = (
    f"(SELECT count(pg_notify('{WEBHOOK_DUE}', '')) FROM (SELECT 1 FROM outbox LIMIT 1) o)"
)
