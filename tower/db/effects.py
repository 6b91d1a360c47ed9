"""What a job's change of status writes besides the job's row, in the same statement.

Every statement of tower/db/lifecycle.py (and the webhook redelivery) embeds these:

- a state event: the CTE that changed the job RETURNs STATE_COLUMNS (bumping
  jobs.event_seq while it holds the row's lock, so a job's events are numbered in the
  order they commit) and the statement adds `state_event AS (insert_state_event(<CTE>))`.
  The job's row is written before the event row takes its `id` from the identity; the
  all-jobs stream relies on that order (tower/events/cursor.py).
- a webhook outbox row: a terminal write RETURNs TERMINAL_COLUMNS and adds
  `outbox_cte(<CTE>)`, which queues one delivery per returned row that is terminal and
  has a webhook_url; WAKE_DELIVERERS sends NOTIFY only when a row was queued. For a job
  without a webhook_url the hot path pays one empty scan of the rows it just returned.
"""

from __future__ import annotations

from tower.db.channels import WEBHOOK_DUE
from tower.db.statuses import TERMINAL_SQL

# The columns a state event is made of; a state-changing CTE returns them.
STATE_COLUMNS = (
    "job_id",
    "event_seq",
    "status",
    "attempt",
    "failure_reason",
    "exit_code",
    "agent_id",
    "engine",
    "profile",
)
STATE_RETURNING = ", ".join(STATE_COLUMNS)
# The same, qualified, for an UPDATE ... FROM whose other table has a job_id too.
JOBS_STATE_RETURNING = ", ".join(f"jobs.{column}" for column in STATE_COLUMNS)
# What a terminal write returns besides TERMINAL_COLUMNS (which hold the rest of a
# state event's columns).
EVENT_SEQ = "jobs.event_seq"


def insert_state_event(source: str) -> str:
    """An INSERT of one state event per row of the CTE `source` (which bumped event_seq)."""
    return f"""
    INSERT INTO job_events (job_id, seq, kind, data)
    SELECT job_id, event_seq, 'state', jsonb_build_object(
        'status', status, 'attempt', attempt, 'failure_reason', failure_reason,
        'exit_code', exit_code, 'agent_id', agent_id, 'engine', engine, 'profile', profile)
    FROM {source}
    """


# What a job's requests through the egress proxy added up to (table job_egress, written
# by tower/egress): NULL for a job that made none. Read where `jobs` is the job's row.
EGRESS_SUMMARY = """
(SELECT jsonb_build_object(
    'allowed', e.allowed, 'refused', e.refused, 'refused_count', e.refused_count,
    'bytes', e.bytes, 'limited', e.limited)
 FROM job_egress e WHERE e.job_id = jobs.job_id)
"""

# What a terminal UPDATE (or the redeliver SELECT) returns for the outbox to read.
TERMINAL_COLUMNS = f"""
jobs.job_id, jobs.status, jobs.request ->> 'webhook_url' AS webhook_url,
jobs.agent_id, jobs.engine, jobs.profile, jobs.exit_code, jobs.result, jobs.error,
jobs.failure_reason, jobs.usage, jobs.duration_ms, jobs.attempt,
jobs.created_at, jobs.started_at, jobs.finished_at,
jobs.artifacts -> 'changes' AS changes, jobs.published, {EGRESS_SUMMARY} AS egress
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
        'finished_at', finished_at, 'changes', changes, 'published', published,
        'egress', egress))
"""

# Standard Webhooks message ids look like msg_<random>; this one is the delivery's key.
NEW_DELIVERY_ID = "'msg_' || replace(gen_random_uuid()::text, '-', '')"


def outbox_cte(source: str) -> str:
    """`outbox AS (...)`: queue a delivery for each terminal row of `source` with a URL."""
    return f"""outbox AS (
    INSERT INTO webhook_deliveries (delivery_id, job_id, event_type, url, payload)
    SELECT {NEW_DELIVERY_ID}, job_id, 'job.' || status, webhook_url, {_PAYLOAD}
    FROM {source}
    WHERE webhook_url IS NOT NULL AND status IN {TERMINAL_SQL}
    RETURNING delivery_id
)"""


# A scalar for the statement's final SELECT: one NOTIFY if the outbox got rows, else none.
# (A data-modifying CTE runs to completion whether or not it is read; this reads it only
# to decide on the NOTIFY.)
WAKE_DELIVERERS = (
    f"(SELECT count(pg_notify('{WEBHOOK_DUE}', '')) FROM (SELECT 1 FROM outbox LIMIT 1) o)"
)
