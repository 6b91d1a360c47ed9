"""The egress proxy's questions to the database, and what its decisions write.

A decision writes the job's egress row (tower/db/tables.py job_egress) and, while the job
runs, a job event of kind 'egress' numbered like every event of the job (its row's
event_seq, bumped in the same statement, as tower/events/queries.py does for log chunks).
"""

from __future__ import annotations

from typing import Any

from tower.db.channels import JOB_EVENT
from tower.db.pool import Connection

# Every request through the proxy waits for its decision's transaction: it commits
# without waiting for its WAL to reach the disk. A database crash may lose the last
# moments' counts and events (never a job's state); a decision takes a millisecond less.
ASYNC_COMMIT = "SET LOCAL synchronous_commit TO OFF"

# The refused hosts a job's record lists (refused_count counts them all).
REFUSED_LISTED = 50

# Is $1 the token of attempt $3 of job $2, running, with an allow-list? Served by the
# unique partial index jobs_gateway_token; the hash is cleared when the attempt ends.
ATTEMPT_OF_TOKEN = """
SELECT 1 FROM jobs
WHERE gateway_token_sha256 = $1 AND status = 'running' AND job_id = $2 AND attempt = $3
  AND jsonb_array_length(coalesce(request -> 'egress' -> 'allow', '[]'::jsonb)) > 0
"""

# The running attempt $2 of job $1, whose token's hash is $3: its profile (metrics) and
# its allow-list.
RUNNING_ATTEMPT = """
SELECT profile, coalesce(request -> 'egress' -> 'allow', '[]'::jsonb) AS allow
FROM jobs
WHERE job_id = $1 AND attempt = $2 AND status = 'running' AND gateway_token_sha256 = $3
"""

# Count one more request of job $1 as open, let through by the proxy instance $4, unless
# $2 are open already or its bytes have reached $3: its serial (the job's count of allowed
# requests, this one included) comes back when it was counted, nothing when a bound
# refused it. The requests another instance let through are closed first: that instance
# is gone (one proxy at a time), and they ended with it, their log lines never to come.
OPEN_REQUEST = """
INSERT INTO job_egress AS e (job_id, open_serials, allowed, proxy_instance)
VALUES ($1, ARRAY[1], 1, $4)
ON CONFLICT (job_id) DO UPDATE SET
    open_serials = CASE WHEN e.proxy_instance IS DISTINCT FROM $4 THEN ARRAY[e.allowed + 1]
                        ELSE e.open_serials || (e.allowed + 1) END,
    allowed = e.allowed + 1,
    proxy_instance = $4
WHERE (cardinality(e.open_serials) < $2 OR e.proxy_instance IS DISTINCT FROM $4)
  AND e.bytes < $3
RETURNING allowed
"""

# Where job $1 stands against its bounds (after OPEN_REQUEST refused it).
USAGE = "SELECT cardinality(open_serials) AS open_requests, bytes FROM job_egress WHERE job_id = $1"


def _event(kind_data: str, after: str = "") -> str:
    """CTEs writing one 'egress' event ($-parameter `kind_data`) for job $1 while it runs
    (fenced on its attempt, $2), with the NOTIFY that wakes its event streams; only when
    the CTE `after` (if named) changed a row."""
    only_if = f"AND EXISTS (SELECT 1 FROM {after})" if after else ""
    return f"""
job AS (
    UPDATE jobs SET event_seq = event_seq + 1
    WHERE job_id = $1 AND attempt = $2 AND status = 'running' {only_if}
    RETURNING job_id, event_seq
),
written AS (
    INSERT INTO job_events (job_id, seq, kind, data)
    SELECT job_id, event_seq, 'egress', {kind_data}::jsonb FROM job
    RETURNING job_id
)
SELECT (SELECT count(pg_notify('{JOB_EVENT}', 'egress ' || job_id)) FROM written) AS events
"""


# A refusal of job $1's attempt $2: $3 the listed entry {host, port, reason}, $4 the
# bound that refused it (NULL for the allow-list or the address rules), $5 the event.
# A host refused again for the same reason is listed once.
REFUSE = f"""
WITH counted AS (
    INSERT INTO job_egress AS e (job_id, refused, refused_count, limited)
    VALUES ($1, jsonb_build_array($3::jsonb), 1, $4)
    ON CONFLICT (job_id) DO UPDATE SET
        refused = CASE
            WHEN jsonb_array_length(e.refused) < {REFUSED_LISTED}
                 AND NOT e.refused @> jsonb_build_array($3::jsonb)
            THEN e.refused || jsonb_build_array($3::jsonb)
            ELSE e.refused END,
        refused_count = e.refused_count + 1,
        limited = coalesce(e.limited, $4)
    RETURNING job_id
),
{_event("$5")}
"""

# An allowed request of job $1's attempt $2 ended, having moved $3 bytes: its serial $5
# no longer open, its bytes counted, its event ($4) written while the job runs. Only a
# request still open ends: a replayed end (its serial closed already) changes nothing.
# Returns the job's profile (metrics) when it ended, else NULL.
ENDED = f"""
WITH ended AS (
    UPDATE job_egress
    SET open_serials = array_remove(open_serials, $5::integer), bytes = bytes + $3
    WHERE job_id = $1 AND $5::integer = ANY (open_serials)
    RETURNING job_id
),
{_event("$4", after="ended")},
    (SELECT profile FROM jobs WHERE job_id = $1 AND EXISTS (SELECT 1 FROM ended)) AS profile
"""

# A request of job $1's attempt $2 that tower allowed (its serial $5 open) and squid then
# refused (its own lookup of the name gave a non-public address): no longer open, and
# listed ($3) and evented ($4) as a refusal. Returns the job's profile (metrics) when the
# request was open, else NULL.
REFUSED_BY_PROXY = f"""
WITH ended AS (
    UPDATE job_egress AS e SET
        open_serials = array_remove(e.open_serials, $5::integer),
        refused = CASE
            WHEN jsonb_array_length(e.refused) < {REFUSED_LISTED}
                 AND NOT e.refused @> jsonb_build_array($3::jsonb)
            THEN e.refused || jsonb_build_array($3::jsonb)
            ELSE e.refused END,
        refused_count = e.refused_count + 1
    WHERE job_id = $1 AND $5::integer = ANY (e.open_serials)
    RETURNING job_id
),
{_event("$4", after="ended")},
    (SELECT profile FROM jobs WHERE job_id = $1 AND EXISTS (SELECT 1 FROM ended)) AS profile
"""

# The key of the ends' tags (tower/egress/tags.py): made by the first replica to start,
# read by every other (tower_secrets, as the webhook secret).
INSERT_END_KEY = """
INSERT INTO tower_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING
"""
END_KEY = "SELECT value FROM tower_secrets WHERE name = $1"


async def commit_without_waiting(connection: Connection) -> None:
    """For the rest of the caller's transaction (ASYNC_COMMIT)."""
    await connection.execute(ASYNC_COMMIT)


async def attempt_of_token(
    connection: Connection, token_sha256: str, job_id: str, attempt: int
) -> bool:
    found = await connection.fetchval(ATTEMPT_OF_TOKEN, token_sha256, job_id, attempt)
    return found is not None


async def running_attempt(
    connection: Connection, job_id: str, attempt: int, token_sha256: str
) -> tuple[str, list[str]] | None:
    row = await connection.fetchrow(RUNNING_ATTEMPT, job_id, attempt, token_sha256)
    if row is None:
        return None
    allow = row["allow"]
    return str(row["profile"]), [str(entry) for entry in allow] if isinstance(allow, list) else []


async def open_request(
    connection: Connection, job_id: str, proxy: str, max_open: int, max_bytes: int
) -> int | tuple[int, int]:
    """The request's serial when counted; else (open, bytes) as they stand against the
    bounds."""
    serial = await connection.fetchval(OPEN_REQUEST, job_id, max_open, max_bytes, proxy)
    if serial is not None:
        return int(serial)
    row = await connection.fetchrow(USAGE, job_id)
    return (int(row["open_requests"]), int(row["bytes"])) if row is not None else (0, 0)


async def refuse(
    connection: Connection,
    job_id: str,
    attempt: int,
    listed: dict[str, Any],
    limited: str | None,
    event: dict[str, Any],
) -> None:
    await connection.fetchval(REFUSE, job_id, attempt, listed, limited, event)


async def ended(
    connection: Connection,
    job_id: str,
    attempt: int,
    serial: int,
    moved: int,
    event: dict[str, Any],
) -> str | None:
    row = await connection.fetchrow(ENDED, job_id, attempt, moved, event, serial)
    return str(row["profile"]) if row is not None and row["profile"] is not None else None


async def refused_by_proxy(
    connection: Connection,
    job_id: str,
    attempt: int,
    serial: int,
    listed: dict[str, Any],
    event: dict[str, Any],
) -> str | None:
    row = await connection.fetchrow(REFUSED_BY_PROXY, job_id, attempt, listed, event, serial)
    return str(row["profile"]) if row is not None and row["profile"] is not None else None


async def end_key(connection: Connection, name: str, new: str) -> str:
    """The stored key named `name`, `new` when none was stored yet."""
    await connection.execute(INSERT_END_KEY, name, new)
    found: str = await connection.fetchval(END_KEY, name)
    return found
