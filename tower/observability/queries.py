"""SQL for health checks, `parpaing doctor` and the metrics scraped from the database."""

from __future__ import annotations

# The cheapest round trip that proves the server answers queries.
PING = "SELECT 1"

# Alembic's record of the applied revision. The table is absent until the first
# migration: callers treat UndefinedTableError as "no revision".
CURRENT_REVISION = "SELECT version_num FROM alembic_version"

# One pass over jobs: the count per status, and for pending jobs the age of the oldest.
# Delayed jobs (run_after in the future) count as queued: they are waiting for a worker.
JOBS_BY_STATUS = """
SELECT status,
       count(*) AS jobs,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_seconds
FROM jobs
GROUP BY status
"""

# The same pass by tenant too, with what each tenant's jobs of this UTC month (by
# submission) reported: the per-tenant gauges (tower/observability/tenants.py).
_MONTH = "date_trunc('month', now(), 'UTC')"


def _figure(name: str) -> str:
    return (
        f"sum(CASE WHEN jsonb_typeof(usage -> '{name}') = 'number'"
        f" THEN (usage ->> '{name}')::float8 END) FILTER (WHERE created_at >= {_MONTH})"
    )


JOBS_BY_TENANT_STATUS = f"""
SELECT tenant, status, count(*) AS jobs,
       {_figure("cost_usd")} AS cost_usd,
       {_figure("input_tokens")} AS input_tokens,
       {_figure("output_tokens")} AS output_tokens
FROM jobs
GROUP BY tenant, status
"""

# What retention rolled up of this month's jobs (tenant_usage), per tenant.
TENANT_USAGE_THIS_MONTH = f"""
SELECT tenant, sum(cost_usd) AS cost_usd, sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens
FROM tenant_usage WHERE day >= ({_MONTH} AT TIME ZONE 'UTC')::date
GROUP BY tenant
"""

# Worker container slots per status, all Docker hosts (the warm pool's rows).
SLOTS_BY_STATUS = "SELECT status, count(*) AS slots FROM pool_slots GROUP BY status"

# Webhook outbox rows per status.
DELIVERIES_BY_STATUS = (
    "SELECT status, count(*) AS deliveries FROM webhook_deliveries GROUP BY status"
)

# --- the dashboard's figures (GET /stats/...) --------------------------------------------

# Jobs per status, optionally for one agent ($1 NULL: every agent) and one tenant ($2
# NULL: every tenant). The agent filter uses jobs_agent_created; without it this is one
# pass over jobs, like JOBS_BY_STATUS.
JOB_COUNTS = """
SELECT status, count(*) AS jobs
FROM jobs
WHERE ($1::text IS NULL OR agent_id = $1) AND ($2::text IS NULL OR tenant = $2)
GROUP BY status
"""

# --- the same figures for one tenant ($1), for a key that sees only its own ---------------

TENANT_JOBS_BY_STATUS = """
SELECT status,
       count(*) AS jobs,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_seconds
FROM jobs
WHERE tenant = $1
GROUP BY status
"""

# Slots waiting for a job are nobody's; a busy one is its job's tenant's.
TENANT_SLOTS_BY_STATUS = """
SELECT s.status, count(*) AS slots
FROM pool_slots AS s LEFT JOIN jobs AS j ON j.job_id = s.job_id
WHERE s.status <> 'busy' OR j.tenant = $1
GROUP BY s.status
"""

TENANT_DELIVERIES_BY_STATUS = """
SELECT d.status, count(*) AS deliveries
FROM webhook_deliveries AS d JOIN jobs AS j ON j.job_id = d.job_id
WHERE j.tenant = $1
GROUP BY d.status
"""

# The newest state event's id: a client that reads the counts and then opens GET /events
# after this id hears of every change made since (the partial index job_events_states covers it).
LAST_STATE_EVENT_ID = "SELECT coalesce(max(id), 0) FROM job_events WHERE kind = 'state'"

# One row per minute of the last $1 minutes, oldest first, empty minutes included:
# jobs submitted in that minute, jobs that ended in it by outcome, and how long the
# runs that ended in it took; one tenant's jobs ($2), or every tenant's ($2 NULL).
# Finished jobs are found by finished_at, which has no index: a scan of jobs, bounded
# by retention (MAX_RETAINED_JOBS), on demand only.
ACTIVITY_BY_MINUTE = """
WITH minutes AS (
    SELECT generate_series(
        date_trunc('minute', now()) - make_interval(mins => $1 - 1),
        date_trunc('minute', now()),
        interval '1 minute'
    ) AS minute
),
submitted AS (
    SELECT date_trunc('minute', created_at) AS minute, count(*) AS jobs
    FROM jobs
    WHERE created_at >= date_trunc('minute', now()) - make_interval(mins => $1 - 1)
      AND ($2::text IS NULL OR tenant = $2)
    GROUP BY 1
),
finished AS (
    SELECT date_trunc('minute', finished_at) AS minute,
           count(*) FILTER (WHERE status = 'completed') AS completed,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
           avg(duration_ms)::float8 AS mean_duration_ms,
           max(duration_ms) AS max_duration_ms
    FROM jobs
    WHERE finished_at >= date_trunc('minute', now()) - make_interval(mins => $1 - 1)
      AND ($2::text IS NULL OR tenant = $2)
    GROUP BY 1
)
SELECT m.minute,
       coalesce(s.jobs, 0) AS submitted,
       coalesce(f.completed, 0) AS completed,
       coalesce(f.failed, 0) AS failed,
       coalesce(f.cancelled, 0) AS cancelled,
       f.mean_duration_ms,
       f.max_duration_ms
FROM minutes m
LEFT JOIN submitted s USING (minute)
LEFT JOIN finished f USING (minute)
ORDER BY m.minute
"""
