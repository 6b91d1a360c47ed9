"""Every SQL statement of the artifacts domain."""

from __future__ import annotations

from tower.db.chunks import ChunkTable

# An attempt's artifacts replace the last one's (chunks go with their rows: a trigger).
DELETE_OF_JOB = "DELETE FROM job_artifacts WHERE job_id = $1"

INSERT_ARTIFACT = """
INSERT INTO job_artifacts (job_id, kind, path, size, mode, sha256, attempt)
VALUES ($1, $2, $3, 0, $4, '', $5)
RETURNING artifact_id
"""

# An artifact's bytes, in order: one row per chunks.CHUNK_BYTES (the last one shorter;
# 1 MiB in rows written before migration 0020), written by COPY into these columns.
CHUNKS = ChunkTable(
    table="job_artifact_chunks",
    columns=("artifact_id", "seq", "data"),
    # $3 rows of the artifact $1 from seq $2 on, in order.
    select_from="""
        SELECT data FROM job_artifact_chunks WHERE artifact_id = $1 AND seq >= $2
        ORDER BY seq LIMIT $3
    """,
    first_size="""
        SELECT octet_length(data) FROM job_artifact_chunks WHERE artifact_id = $1 AND seq = 0
    """,
)

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
