"""Every SQL statement about job_events.

State events are written by the statements that change a job's status
(tower/db/lifecycle.py, with tower/db/effects.py's insert_state_event); this module
writes log events and reads both.
"""

from __future__ import annotations

from tower.db.channels import JOB_EVENT

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

# Every job's state events after an id, each with its job's tenant (a stream sends a
# tenant's key only its tenant's), and the oldest transaction running when the
# statement's snapshot was taken (cursor.py: why an event with a smaller id may still
# be to come). Always at least one row, for the snapshot.
SELECT_STATE_EVENTS = """
SELECT snapshot.oldest_running, event.id, event.job_id, event.seq, event.data,
       event.created_at, event.tenant
FROM (
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS oldest_running
) AS snapshot
LEFT JOIN LATERAL (
    SELECT e.id, e.job_id, e.seq, e.data, e.created_at, j.tenant
    FROM job_events AS e JOIN jobs AS j ON j.job_id = e.job_id
    WHERE e.kind = 'state' AND e.id > $1
    ORDER BY e.id
    LIMIT $2
) AS event ON true
ORDER BY event.id
"""

# A transaction id for the all-jobs stream's marker (cursor.py). Taking one makes this
# statement's transaction a writer in name only: it commits at once, writing nothing.
TAKE_MARKER = "SELECT pg_current_xact_id()::text::bigint"

# $2: the caller's tenant (NULL: a key that sees every tenant); another's job is unknown.
SELECT_STATUS = "SELECT status FROM jobs WHERE job_id = $1 AND ($2::text IS NULL OR tenant = $2)"
