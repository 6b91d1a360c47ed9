"""Every statement that changes a job's status. No other module writes jobs.status.

The state machine (docs/architecture.md draws it):

    INSERT_JOB   (new)              -> pending
    CLAIM        pending            -> running      (a new attempt, lease and gateway token)
    FINISH       running            -> completed | failed      (the owner, fenced)
    RELEASE      running            -> pending | failed        (the owner hands it back)
    REAP         running, lease out -> pending | failed        (any replica)
    REQUEUE      running            -> pending      (the owner: infrastructure failed, attempt kept)
    ADOPT        running, lease out -> running      (a replica on the container's host)
    CANCEL_JOB   pending | running  -> cancelled    (the API)

Each statement also writes, in the same statement and so the same transaction, the
job's state event and, when it makes the job terminal, its webhook outbox row
(tower/db/effects.py), and announces the change with pg_notify (tower/db/channels.py):
they happen if and only if the row changed. Every write by a job's owner is fenced by
its lease token and `status = 'running'`: a replica that lost its lease, or whose job
was cancelled, changes nothing. Terminal states are final: no statement matches them.
The gateway token dies with the attempt: every write that ends one clears its hash.

The domain modules call these through small functions of their own (jobs/queries.py:
insert and cancel; queue/queries.py: claim, finish, release, reap).
"""

from __future__ import annotations

from tower.db.channels import JOB_CANCELLED, JOB_FINISHED, JOB_PENDING
from tower.db.effects import (
    EVENT_SEQ,
    JOBS_STATE_RETURNING,
    STATE_RETURNING,
    TERMINAL_COLUMNS,
    WAKE_DELIVERERS,
    insert_state_event,
    outbox_cte,
)

# Job ids per NOTIFY payload: 64 of at most 78 characters stay under PostgreSQL's 8000 bytes.
ANNOUNCE_BATCH = 64

# --- new -> pending ------------------------------------------------------------------

# Insert, record the 'pending' event and announce, in one statement: one round trip,
# and the notification is delivered only when the row commits, so dispatchers (and
# event streams) hear of it once it is visible.
INSERT_JOB = f"""
WITH inserted AS (
    INSERT INTO jobs (job_id, agent_id, engine, profile, request, priority, max_attempts,
                      tenant, submitted_by, event_seq)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1)
    RETURNING {STATE_RETURNING}
),
state_event AS ({insert_state_event("inserted")})
SELECT pg_notify('{JOB_PENDING}', job_id) FROM inserted
"""

# --- pending -> running ----------------------------------------------------------------

# Fair among tenants (docs/tenants.md): each tenant with claimable jobs offers its next
# ones in priority order, each scored by the running jobs its tenant would have once it
# starts, over its share ($7 where the tenant sets none); the lowest scores go first
# (priority, then age, break ties), so a tenant with fewer running jobs per share is
# served before one with more, and one tenant's flood waits behind the others' first jobs.
# With one tenant this is the order of old: priority, then age (and its running jobs are
# not counted, unless it has a running quota: they change nothing then).
#
# A tenant with a running quota (max_running, $6 where it sets none; 0: none) offers only
# what its quota has room for, and it is exact across replicas: its row is locked (SKIP
# LOCKED: a replica claiming for it already makes another skip it this time), and the
# running count read in this statement's snapshot misses what a claim that committed
# after the snapshot started. Every claim that starts a capped tenant's jobs writes, on
# the row it holds, its transaction and the most it left running; the row as locked is
# the latest, so when that transaction is not in this snapshot, that figure (an upper
# bound: jobs only stop since) counts instead. Jobs ending meanwhile only make it
# conservative.
#
# Each tenant's offered jobs are locked as they are found (SKIP LOCKED), so two replicas
# claiming at once take different jobs, and the picked rows are MATERIALIZED so the
# statement locks and updates no more than $3 of them (planned as a rescanned semi-join
# it could lock and update more). Each claimed row gets the n-th of the gateway token
# hashes in $4 (tokens are minted by tower, which keeps the plain tokens; row n of the
# claim is handed token n), and its 'running' event. The events are announced on $5 by
# the batch (one NOTIFY per ANNOUNCE_BATCH jobs: each NOTIFY is work for every
# replica's listener). The rows are the claimed jobs, or one row of NULLs when none was;
# each says whether a tenant with a running quota has claimable jobs (`held_back`): its
# jobs may start as soon as one of its running ones ends, anywhere; and whether such a
# tenant was skipped because another claim held its row (`contended`): what that claim
# leaves may be claimable a moment later, so the claimer asks again soon.
CLAIM = f"""
WITH waiting AS MATERIALIZED (
    SELECT t.name AS tenant,
           greatest(coalesce(t.share, $7), 0.001)::float8 AS share,
           coalesce(t.max_running, $6) AS cap
    FROM tenants AS t
    CROSS JOIN LATERAL (
        -- Probed per tenant in jobs_claimable_tenant (its order), never a pass over jobs.
        SELECT 1 FROM jobs AS p
        WHERE p.tenant = t.name AND p.status = 'pending' AND p.run_after <= now()
        ORDER BY p.priority DESC, p.created_at
        LIMIT 1
    ) AS claimable
), queued AS MATERIALIZED (
    SELECT tenant, share, cap,
           CASE WHEN cap > 0 OR (SELECT count(*) FROM waiting) > 1
                THEN (SELECT count(*) FROM jobs AS r
                      WHERE r.tenant = waiting.tenant AND r.status = 'running')
                ELSE 0 END AS running
    FROM waiting
), capped AS MATERIALIZED (
    SELECT q.tenant, q.share, q.cap,
           CASE WHEN coalesce(pg_visible_in_snapshot(t.claimed_xact::text::xid8,
                                                     pg_current_snapshot()), true)
                THEN q.running ELSE greatest(q.running, t.claimed_running) END AS running
    FROM tenants AS t JOIN queued AS q ON q.tenant = t.name
    WHERE q.cap > 0
    FOR NO KEY UPDATE OF t SKIP LOCKED
), open AS (
    SELECT tenant, share, running, cap - running AS room FROM capped WHERE running < cap
    UNION ALL
    SELECT tenant, share, running, $3 AS room FROM queued WHERE cap <= 0
), offered AS (
    SELECT o.tenant, o.share, o.running, j.job_id, j.priority, j.created_at
    FROM open AS o
    CROSS JOIN LATERAL (
        SELECT job_id, priority, created_at FROM jobs
        WHERE jobs.tenant = o.tenant AND status = 'pending' AND run_after <= now()
        ORDER BY priority DESC, created_at
        LIMIT least(o.room, $3)
        FOR UPDATE SKIP LOCKED
    ) AS j
), picked AS MATERIALIZED (
    SELECT job_id, tenant FROM (
        SELECT job_id, tenant, priority, created_at,
               (running + row_number() OVER (
                   PARTITION BY tenant ORDER BY priority DESC, created_at) - 1) / share
                   AS score
        FROM offered
    ) AS scored
    ORDER BY score, priority DESC, created_at
    LIMIT $3
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
), counted AS (
    UPDATE tenants SET
        claimed_xact = pg_current_xact_id()::text::bigint,
        claimed_running = capped.running + started.jobs
    FROM capped
    JOIN (SELECT tenant, count(*) AS jobs FROM picked GROUP BY tenant) AS started
      USING (tenant)
    WHERE tenants.name = capped.tenant
)
SELECT job_id, agent_id, engine, profile, request, attempt, lease_token, n, queued_seconds,
       (SELECT count(*) FROM announced) AS announcements, held.back AS held_back,
       held.contended
FROM (
    SELECT EXISTS (SELECT 1 FROM queued WHERE cap > 0) AS back,
           EXISTS (SELECT 1 FROM queued AS q
                   WHERE q.cap > 0 AND q.tenant NOT IN (SELECT tenant FROM capped)) AS contended
) AS held
LEFT JOIN claimed ON true
"""

# --- running -> completed | failed -------------------------------------------------------

# $3 is the terminal status. It returns the job_id it finished, so a batch of them says
# which ones were written.
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

# --- running -> pending | failed (handed back) ---------------------------------------------

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

# REAP's wait for adoption: past $4 seconds of expiry, or no container to adopt.
_NO_ADOPTABLE_CONTAINER = """(
        lease_until < now() - make_interval(secs => $4)
        OR NOT EXISTS (
            SELECT 1 FROM pool_slots AS s
            WHERE s.job_id = jobs.job_id AND s.lease_token = jobs.lease_token
              AND s.status = 'busy' AND s.container_id IS NOT NULL))"""

# The owner's own hand-back (a clean stop). $1 error, $2/$3 channels, $4 job, $5 token.
RELEASE = f"""
WITH released AS (
    UPDATE jobs SET {_RELEASE_SET}
    WHERE job_id = $4 AND lease_token = $5 AND status = 'running'
    RETURNING {TERMINAL_COLUMNS}, {EVENT_SEQ}
),
{_RELEASE_NOTIFY}
"""

# Every job whose lease expired. Safe when reapers race: the loser's UPDATE re-checks
# the WHERE on the winner's row version, which is no longer running with an expired
# lease, and skips it. A job whose container was started (a busy pool slot with its
# lease token) is left $4 seconds longer: a replica on that Docker host may adopt it
# (ADOPT) while the agent runs on; past that, nobody on its host is there to.
REAP = f"""
WITH released AS (
    UPDATE jobs SET {_RELEASE_SET}
    WHERE status = 'running' AND lease_until < now()
      AND {_NO_ADOPTABLE_CONTAINER}
    RETURNING {TERMINAL_COLUMNS}, {EVENT_SEQ}
),
{_RELEASE_NOTIFY}
"""

LOST_BY_STOP = "The tower running this job stopped before it finished"
LOST_BY_LEASE = "The tower running this job stopped renewing its lease"

# --- running (lease expired) -> running (another owner) ----------------------------------

# A replica on the Docker host where the job's container still runs takes the job over:
# a new lease token (the old owner, should it come back, is fenced off) and the same
# attempt and gateway token hash (the agent's LLM calls keep passing; nothing is run
# again). The busy pool slot moves to the new token in the same statement, so the pool's
# reconcile never takes the container for an orphan. $4/$5 are the jobs and the lease
# tokens the adopter found (so a job reaped, cancelled or renewed since is skipped);
# $3 the adopter's Docker host. No state event: the status does not change.
ADOPT = """
WITH picked AS MATERIALIZED (
    SELECT j.job_id, s.slot_id FROM jobs AS j
    JOIN unnest($4::text[], $5::uuid[]) AS found(job_id, token)
      ON found.job_id = j.job_id AND found.token = j.lease_token
    JOIN pool_slots AS s ON s.job_id = j.job_id AND s.lease_token = j.lease_token
    WHERE j.status = 'running' AND j.lease_until < now()
      AND s.docker_host = $3 AND s.status = 'busy' AND s.container_id IS NOT NULL
    FOR UPDATE OF j, s SKIP LOCKED
), adopted AS (
    UPDATE jobs SET
        lease_owner = $1,
        ran_by = $1,
        lease_token = gen_random_uuid(),
        lease_until = now() + make_interval(secs => $2)
    FROM picked
    WHERE jobs.job_id = picked.job_id
    RETURNING jobs.job_id, jobs.agent_id, jobs.engine, jobs.profile, jobs.request,
              jobs.attempt, jobs.lease_token, picked.slot_id,
              extract(epoch FROM jobs.started_at)::float8 AS started_epoch
), moved AS (
    UPDATE pool_slots SET lease_token = adopted.lease_token
    FROM adopted
    WHERE pool_slots.slot_id = adopted.slot_id
    RETURNING pool_slots.slot_id, pool_slots.container_id
)
SELECT adopted.*, moved.container_id FROM adopted JOIN moved USING (slot_id)
"""

# --- running -> pending (the infrastructure failed, not the job) ---------------------------

# The owner's hand-back of a job that could not run because of infrastructure (the Docker
# daemon gone mid-job, the worker image missing): back to the queue with the attempt
# given back, so it costs none of max_attempts. Fenced like every owner's write; the
# gateway token dies with the attempt. $1 job, $2 token, $3 channel (JOB_PENDING).
REQUEUE = f"""
WITH requeued AS (
    UPDATE jobs SET
        status = 'pending', attempt = attempt - 1, run_after = now(),
        event_seq = event_seq + 1,
        lease_owner = NULL, lease_token = NULL, lease_until = NULL,
        gateway_token_sha256 = NULL
    WHERE job_id = $1 AND lease_token = $2 AND status = 'running'
    RETURNING {STATE_RETURNING}
),
state_event AS ({insert_state_event("requeued")})
SELECT job_id, pg_notify($3, job_id) FROM requeued
"""

# --- pending | running -> cancelled ----------------------------------------------------------

# Only a live job can be cancelled; clearing the lease fences off its owner's writes.
# Clearing the gateway token's hash makes the gateway refuse its worker's next call.
# $2: the caller's tenant (NULL: a key that sees every tenant); another's job is untouched.
CANCEL_JOB = f"""
WITH cancelled AS (
    UPDATE jobs
    SET status = 'cancelled', finished_at = now(), event_seq = event_seq + 1,
        lease_owner = NULL, lease_token = NULL, lease_until = NULL,
        gateway_token_sha256 = NULL
    WHERE job_id = $1 AND status IN ('pending', 'running')
      AND ($2::text IS NULL OR tenant = $2)
    RETURNING {TERMINAL_COLUMNS}, {EVENT_SEQ}
),
state_event AS ({insert_state_event("cancelled")}),
{outbox_cte("cancelled")}
SELECT job_id, {WAKE_DELIVERERS} FROM cancelled
"""

# Sent after CANCEL_JOB commits: the owner stops the job, waiters wake.
NOTIFY_CANCELLED = f"SELECT pg_notify('{JOB_CANCELLED}', $1), pg_notify('{JOB_FINISHED}', $1)"
