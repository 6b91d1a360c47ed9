"""Every SQL statement of the artifacts domain."""

from __future__ import annotations

# An attempt's artifacts replace the last one's (chunks go with their rows: CASCADE).
DELETE_OF_JOB = "DELETE FROM job_artifacts WHERE job_id = $1"

INSERT_ARTIFACT = """
INSERT INTO job_artifacts (job_id, kind, path, size, mode, sha256, attempt)
VALUES ($1, $2, $3, 0, $4, '', $5)
RETURNING artifact_id
"""

# An artifact's bytes, in order: one row per CHUNK_BYTES (the last one shorter).
INSERT_CHUNK = "INSERT INTO job_artifact_chunks (artifact_id, seq, data) VALUES ($1, $2, $3)"

# Its size and digest as measured while its chunks went in.
MEASURED = "UPDATE job_artifacts SET size = $2, sha256 = $3 WHERE artifact_id = $1"

# The summary in the job's row, written by the attempt that holds the lease (fenced like
# every owner's write), in the transaction that stored the files: if the lease is gone,
# nothing of it stays.
SET_SUMMARY = """
UPDATE jobs SET artifacts = $3
WHERE job_id = $1 AND lease_token = $2 AND status = 'running'
RETURNING job_id
"""

# Whether the job exists for the caller, and its summary. $2: the caller's tenant (NULL:
# a key that sees every tenant); another tenant's job does not exist for it.
SELECT_SUMMARY = """
SELECT artifacts FROM jobs WHERE job_id = $1 AND ($2::text IS NULL OR tenant = $2)
"""

SELECT_FILES = """
SELECT path, size, mode, sha256 FROM job_artifacts
WHERE job_id = $1 AND kind = 'file' ORDER BY path
"""

SELECT_ONE = """
SELECT artifact_id, path, size, mode, sha256 FROM job_artifacts
WHERE job_id = $1 AND kind = $2 AND path = $3
"""

SELECT_ALL_FILES = """
SELECT artifact_id, path, size, mode, sha256 FROM job_artifacts
WHERE job_id = $1 AND kind = 'file' ORDER BY path
"""

SELECT_CHUNK = "SELECT data FROM job_artifact_chunks WHERE artifact_id = $1 AND seq = $2"
