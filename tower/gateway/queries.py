"""The gateway's one question to the database."""

from __future__ import annotations

from tower.db.pool import Connection

# Served by the unique partial index jobs_gateway_token. A token passes only while its
# attempt runs: terminal writes and requeues clear the hash, and the status test makes
# sure even a hash left behind could not let a finished job's token through.
RUNNING_JOB_OF_TOKEN = """
SELECT job_id FROM jobs
WHERE gateway_token_sha256 = $1 AND status = 'running'
"""


async def running_job_of_token(connection: Connection, token_sha256: str) -> str | None:
    job_id: str | None = await connection.fetchval(RUNNING_JOB_OF_TOKEN, token_sha256)
    return job_id
