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

# Worker container slots per status, all Docker hosts (the warm pool's rows).
SLOTS_BY_STATUS = "SELECT status, count(*) AS slots FROM pool_slots GROUP BY status"

# Webhook outbox rows per status.
DELIVERIES_BY_STATUS = (
    "SELECT status, count(*) AS deliveries FROM webhook_deliveries GROUP BY status"
)
