"""Every SQL statement of the sessions domain. A continued job is inserted by
tower/jobs (INSERT_JOB, then its place in the session); these read."""

from __future__ import annotations

# The job to continue: what its turn copies, where it stands, and whether its turn left
# captured state (job_artifacts kind 'session'). `last_finished` is its session's
# latest finish: the state expires SESSION_TTL_HOURS after it. $2: the caller's tenant
# (NULL: a key that sees every tenant); another tenant's job is not found.
SELECT_PARENT = """
SELECT j.job_id, j.status, j.agent_id, j.engine, j.profile, j.request, j.started_at,
       j.session_id, j.turn, j.tenant,
       (SELECT max(s.finished_at) FROM jobs AS s
        WHERE s.job_id = j.job_id OR (j.session_id IS NOT NULL AND s.session_id = j.session_id)
       ) AS last_finished,
       (SELECT a.size FROM job_artifacts AS a
        WHERE a.job_id = j.job_id AND a.kind = 'session') AS state_size
FROM jobs AS j WHERE j.job_id = $1 AND ($2::text IS NULL OR j.tenant = $2)
"""

# A session's turns in order (siblings, from two continues of one job, by creation).
# Every turn is its first's tenant's (a continue is its parent's tenant's job); $2 as above.
SELECT_TURNS = """
SELECT job_id, parent_job_id, turn, status, created_at, finished_at, result, error,
       failure_reason, usage
FROM jobs WHERE session_id = $1 AND ($2::text IS NULL OR tenant = $2)
ORDER BY turn, created_at, job_id
"""

# Run by retention: captured state whose session's last turn finished more than $1
# hours ago (a session's turns share session_id; a job never continued has none).
DELETE_EXPIRED_STATE = """
DELETE FROM job_artifacts AS a
USING jobs AS j
WHERE a.kind = 'session' AND j.job_id = a.job_id
  AND j.finished_at < now() - make_interval(hours => $1)
  AND NOT EXISTS (
      SELECT 1 FROM jobs AS s
      WHERE j.session_id IS NOT NULL AND s.session_id = j.session_id
        AND (s.finished_at IS NULL OR s.finished_at >= now() - make_interval(hours => $1)))
"""
