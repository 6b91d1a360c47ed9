"""Every SQL statement about job_events, and the fragments other statements embed.

A state event is written by the same statement that changes the job's state (see
jobs/queries.py and queue/queries.py): the statement bumps jobs.event_seq while it
holds the row's lock, so a job's events are numbered in the order they commit.

Each such statement's CTE that changed the job RETURNs STATE_RETURNING, and the
statement adds `state_event AS (insert_state_event(<that CTE>))`. The job's row is
written before the event row takes its `id` from the identity; the all-jobs stream
relies on that order (see stream.py).
"""

from __future__ import annotations

from tower.db.channels import JOB_EVENT

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
# What a terminal write returns besides the webhook outbox's TERMINAL_COLUMNS (which
# hold the rest of a state event's columns).
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


# Log chunks from the job's owner, fenced by its lease like every owner write: a
# replica that lost the job (cancelled, reaped) adds nothing. $3/$4: streams and texts.
INSERT_LOG_CHUNKS = f"""
WITH owner AS (
    UPDATE jobs SET event_seq = event_seq + cardinality($3::text[])
    WHERE job_id = $1 AND lease_token = $2 AND status = 'running'
    RETURNING job_id, event_seq - cardinality($3::text[]) AS base
),
written AS (
    INSERT INTO job_events (job_id, seq, kind, data)
    SELECT owner.job_id, owner.base + chunk.n, 'log',
           jsonb_build_object('stream', chunk.stream, 'text', chunk.text)
    FROM owner, unnest($3::text[], $4::text[]) WITH ORDINALITY AS chunk(stream, text, n)
    RETURNING job_id, seq
)
SELECT pg_notify('{JOB_EVENT}', 'log ' || job_id) FROM written GROUP BY job_id
"""

# The job's status with its events after a seq, in one snapshot: when the status is
# terminal, the terminal event (written by the same statement) is among the rows.
# No row at all: the job does not exist. A job without new events gives one row of NULLs.
SELECT_JOB_EVENTS = """
SELECT job.status, event.seq, event.kind, event.data, event.created_at
FROM jobs AS job
LEFT JOIN LATERAL (
    SELECT seq, kind, data, created_at FROM job_events
    WHERE job_events.job_id = job.job_id AND seq > $2
    ORDER BY seq
    LIMIT $3
) AS event ON true
WHERE job.job_id = $1
ORDER BY event.seq
"""

# Every job's state events after an id, and the oldest transaction running when the
# statement's snapshot was taken (cursor.py: why an event with a smaller id may still
# be to come). Always at least one row, for the snapshot.
SELECT_STATE_EVENTS = """
SELECT snapshot.oldest_running, event.id, event.job_id, event.seq, event.data,
       event.created_at
FROM (
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS oldest_running
) AS snapshot
LEFT JOIN LATERAL (
    SELECT id, job_id, seq, data, created_at FROM job_events
    WHERE kind = 'state' AND id > $1
    ORDER BY id
    LIMIT $2
) AS event ON true
ORDER BY event.id
"""

# A transaction id for the all-jobs stream's marker (cursor.py). Taking one makes this
# statement's transaction a writer in name only: it commits at once, writing nothing.
TAKE_MARKER = "SELECT pg_current_xact_id()::text::bigint"

SELECT_STATUS = "SELECT status FROM jobs WHERE job_id = $1"
