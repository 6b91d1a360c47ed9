"""The SQL of staging a job's workspace."""

from __future__ import annotations

# A job's inputs in order, with their uploads' facts; `kind` is NULL for an upload
# deleted since the submit (its job_inputs.upload_id was set NULL, or it is gone now).
SELECT_JOB_INPUTS = """
SELECT i.position, i.path, i.upload_id, u.kind, u.filename, u.size
FROM job_inputs AS i LEFT JOIN uploads AS u ON u.upload_id = i.upload_id
WHERE i.job_id = $1
ORDER BY i.position
"""

# What tower pushed for the job's output, written by the attempt that holds the lease
# (fenced like every owner's write) before its final write, so the finish's webhook and
# every reader see it with the terminal status.
SET_PUBLISHED = """
UPDATE jobs SET published = $3
WHERE job_id = $1 AND lease_token = $2 AND status = 'running'
RETURNING job_id
"""

# The captured state of the turn a continued job continues (docs/sessions.md).
SELECT_SESSION_STATE = """
SELECT artifact_id, size FROM job_artifacts WHERE job_id = $1 AND kind = 'session'
"""
