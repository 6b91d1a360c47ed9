"""Every SQL statement of the tenants domain: tenants and their quotas, API keys."""

from __future__ import annotations

from tower.db.channels import KEYS_CHANGED, TENANTS_CHANGED

KEY_COLUMNS = "key_id, tenant, role, name, hint, created_at"

QUOTA_COLUMNS = (
    "max_running",
    "submits_per_minute",
    "spend_per_day_usd",
    "spend_per_month_usd",
    "max_queued",
    "share",
)
TENANT_COLUMNS = f"name, {', '.join(QUOTA_COLUMNS)}, created_at, updated_at"

# A key's tenant exists from its first key on, with the default quotas.
ENSURE_TENANT = "INSERT INTO tenants (name) VALUES ($1) ON CONFLICT (name) DO NOTHING"

# No row when the tenant already has a key of that name (409).
INSERT_KEY = f"""
INSERT INTO api_keys (key_id, key_sha256, tenant, role, name, hint)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (tenant, name) DO NOTHING
RETURNING {KEY_COLUMNS}
"""

# Every key, or one tenant's ($1 NULL: all), oldest first.
SELECT_KEYS = f"""
SELECT {KEY_COLUMNS} FROM api_keys
WHERE $1::text IS NULL OR tenant = $1
ORDER BY created_at, key_id
"""

# The key a presented key's digest names (api_keys_sha256).
SELECT_KEY_BY_DIGEST = f"SELECT {KEY_COLUMNS}, key_sha256 FROM api_keys WHERE key_sha256 = $1"

# Revoke: the row goes, and every replica hears it in the same commit (its cache of
# keys drops it: tower/tenants/cache.py).
DELETE_KEY = f"""
WITH deleted AS (DELETE FROM api_keys WHERE key_id = $1 RETURNING key_id)
SELECT key_id, pg_notify('{KEYS_CHANGED}', key_id) FROM deleted
"""

# A new key: replicas drop what they cached as unknown (a key tried before it existed).
NOTIFY_NEW_KEY = f"SELECT pg_notify('{KEYS_CHANGED}', $1)"

# Set a tenant's quotas (every one: NULL is the default), creating the tenant if needed;
# replicas reload the tenant's quotas on the notification.
PUT_TENANT = f"""
WITH written AS (
    INSERT INTO tenants (name, {", ".join(QUOTA_COLUMNS)})
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (name) DO UPDATE SET
        {", ".join(f"{column} = EXCLUDED.{column}" for column in QUOTA_COLUMNS)},
        updated_at = now()
    RETURNING {TENANT_COLUMNS}
)
SELECT written.*, pg_notify('{TENANTS_CHANGED}', written.name) AS notified FROM written
"""

SELECT_TENANT = f"SELECT {TENANT_COLUMNS} FROM tenants WHERE name = $1"

SELECT_TENANTS = f"SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name"

# --- admission (tower/tenants/admission.py) -------------------------------------------------

# Count a submit of tenant $1 in the current minute, and say how many it makes and how
# long until the minute ends. The row lock makes a tenant's submits count one after
# another, in the submit's transaction: a refused submit rolls its count back. A submit
# that began before the minute turned (its now() earlier) counts in the newer minute.
COUNT_SUBMIT = """
INSERT INTO tenant_rates AS r (tenant, window_start, submits)
VALUES ($1, date_trunc('minute', now()), 1)
ON CONFLICT (tenant) DO UPDATE SET
    submits = CASE WHEN EXCLUDED.window_start <= r.window_start THEN r.submits + 1 ELSE 1 END,
    window_start = greatest(r.window_start, EXCLUDED.window_start)
RETURNING submits,
          ceil(extract(epoch FROM window_start + interval '1 minute' - now()))::int
              AS seconds_left
"""

# The tenant's jobs waiting in the queue (jobs_claimable_tenant). Read after COUNT_SUBMIT
# in the same transaction, so every submit of the tenant before this one is counted.
QUEUED = "SELECT count(*) FROM jobs WHERE tenant = $1 AND status = 'pending'"


# A job's reported usage figure, when it is a number (engines report what they know).
def _figure(name: str, source: str = "usage") -> str:
    return (
        f"CASE WHEN jsonb_typeof({source} -> '{name}') = 'number'"
        f" THEN ({source} ->> '{name}')::float8 ELSE 0 END"
    )


_DAY = "date_trunc('day', now(), 'UTC')"
_MONTH = "date_trunc('month', now(), 'UTC')"

# What tenants use now: running and queued jobs, submits this minute, and by UTC day and
# month of submission their jobs, tokens and cost, from the jobs kept plus what retention
# rolled up into tenant_usage. One tenant ($1), or every tenant ($1 NULL). Reads the
# tenant's live jobs and this month's, bounded by retention.
USE = f"""
WITH live AS (
    SELECT tenant,
           count(*) FILTER (WHERE status = 'running') AS running,
           count(*) FILTER (WHERE status = 'pending') AS queued,
           count(*) FILTER (WHERE created_at >= date_trunc('minute', now()))
               AS submits_this_minute,
           count(*) FILTER (WHERE created_at >= {_DAY}) AS jobs_today,
           count(*) FILTER (WHERE created_at >= {_MONTH}) AS jobs_this_month,
           sum({_figure("cost_usd")}) FILTER (WHERE created_at >= {_DAY}) AS spend_today,
           sum({_figure("cost_usd")}) FILTER (WHERE created_at >= {_MONTH}) AS spend_month,
           sum({_figure("input_tokens")}) FILTER (WHERE created_at >= {_MONTH})
               AS input_tokens,
           sum({_figure("output_tokens")}) FILTER (WHERE created_at >= {_MONTH})
               AS output_tokens
    FROM jobs
    WHERE ($1::text IS NULL OR tenant = $1)
      AND (status IN ('pending', 'running') OR created_at >= {_MONTH})
    GROUP BY tenant
), rolled AS (
    SELECT tenant,
           sum(jobs) FILTER (WHERE day = ({_DAY} AT TIME ZONE 'UTC')::date) AS jobs_today,
           sum(jobs) AS jobs_this_month,
           sum(cost_usd) FILTER (WHERE day = ({_DAY} AT TIME ZONE 'UTC')::date) AS spend_today,
           sum(cost_usd) AS spend_month,
           sum(input_tokens) AS input_tokens,
           sum(output_tokens) AS output_tokens
    FROM tenant_usage
    WHERE ($1::text IS NULL OR tenant = $1) AND day >= ({_MONTH} AT TIME ZONE 'UTC')::date
    GROUP BY tenant
)
SELECT t.name AS tenant,
       coalesce(live.running, 0) AS running,
       coalesce(live.queued, 0) AS queued,
       coalesce(live.submits_this_minute, 0) AS submits_this_minute,
       coalesce(live.jobs_today, 0) + coalesce(rolled.jobs_today, 0) AS jobs_today,
       coalesce(live.jobs_this_month, 0) + coalesce(rolled.jobs_this_month, 0)
           AS jobs_this_month,
       coalesce(live.input_tokens, 0) + coalesce(rolled.input_tokens, 0)
           AS input_tokens_this_month,
       coalesce(live.output_tokens, 0) + coalesce(rolled.output_tokens, 0)
           AS output_tokens_this_month,
       coalesce(live.spend_today, 0) + coalesce(rolled.spend_today, 0) AS spend_today_usd,
       coalesce(live.spend_month, 0) + coalesce(rolled.spend_month, 0)
           AS spend_this_month_usd,
       extract(epoch FROM {_DAY} + interval '1 day' - now())::float8 AS day_left,
       extract(epoch FROM {_MONTH} + interval '1 month' - now())::float8 AS month_left
FROM tenants AS t
LEFT JOIN live ON live.tenant = t.name
LEFT JOIN rolled ON rolled.tenant = t.name
WHERE $1::text IS NULL OR t.name = $1
ORDER BY t.name
"""

# What tenant $1 spent today and this month (UTC, by day of submission): its jobs kept
# this month (jobs_tenant_created) plus what retention rolled up; and the seconds until
# the day and the month end. Read at each submit of a tenant with a spend quota.
SPEND = f"""
SELECT coalesce((SELECT sum({_figure("cost_usd")}) FILTER (WHERE created_at >= {_DAY})
                 FROM jobs WHERE tenant = $1 AND created_at >= {_MONTH}), 0)
       + coalesce((SELECT sum(cost_usd) FROM tenant_usage
                   WHERE tenant = $1 AND day = ({_DAY} AT TIME ZONE 'UTC')::date), 0)
           AS spend_today_usd,
       coalesce((SELECT sum({_figure("cost_usd")})
                 FROM jobs WHERE tenant = $1 AND created_at >= {_MONTH}), 0)
       + coalesce((SELECT sum(cost_usd) FROM tenant_usage
                   WHERE tenant = $1 AND day >= ({_MONTH} AT TIME ZONE 'UTC')::date), 0)
           AS spend_this_month_usd,
       extract(epoch FROM {_DAY} + interval '1 day' - now())::float8 AS day_left,
       extract(epoch FROM {_MONTH} + interval '1 month' - now())::float8 AS month_left
"""

# Retention's share (tower/queue/queries.py): the usage of jobs about to be deleted, by
# tenant and UTC day of submission, added to tenant_usage. `gone` is the CTE that deleted
# them, RETURNING tenant, created_at and usage.
ROLL_UP_GONE = f"""
INSERT INTO tenant_usage AS u (tenant, day, jobs, input_tokens, output_tokens, cost_usd)
SELECT tenant, (created_at AT TIME ZONE 'UTC')::date, count(*),
       sum({_figure("input_tokens")})::bigint, sum({_figure("output_tokens")})::bigint,
       sum({_figure("cost_usd")})
FROM gone
GROUP BY 1, 2
ON CONFLICT (tenant, day) DO UPDATE SET
    jobs = u.jobs + EXCLUDED.jobs,
    input_tokens = u.input_tokens + EXCLUDED.input_tokens,
    output_tokens = u.output_tokens + EXCLUDED.output_tokens,
    cost_usd = u.cost_usd + EXCLUDED.cost_usd
"""

# Every tenant's quotas, for a replica's cache of them.
SELECT_QUOTAS = f"SELECT name, {', '.join(QUOTA_COLUMNS)} FROM tenants WHERE name = $1"
