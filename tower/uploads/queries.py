"""Every SQL statement of the uploads domain."""

from __future__ import annotations

from tower.db.chunks import ChunkTable
from tower.db.statuses import TERMINAL_SQL

COLUMNS = "upload_id, kind, filename, size, sha256, entries, created_at, expires_at"

INSERT_UPLOAD = f"""
INSERT INTO uploads (upload_id, kind, filename, size, sha256, entries, expires_at, tenant)
VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(hours => $7), $8)
RETURNING {COLUMNS}
"""

# An upload's bytes, in order: one row per chunks.CHUNK_BYTES (the last one shorter),
# written by COPY into these columns.
CHUNKS = ChunkTable(
    table="upload_chunks",
    columns=("upload_id", "seq", "data"),
    # $3 rows of the upload $1 from seq $2 on, in order.
    select_from="""
        SELECT data FROM upload_chunks WHERE upload_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3
    """,
    first_size="SELECT octet_length(data) FROM upload_chunks WHERE upload_id = $1 AND seq = 0",
)

# A streamed upload's size and digest, measured as it went in (its row is inserted
# first, with 0 and '', in the same transaction: the chunks reference it).
MEASURED = f"""
UPDATE uploads SET size = $2, sha256 = $3 WHERE upload_id = $1 RETURNING {COLUMNS}
"""

# An upload is its tenant's: $2 is the caller's (NULL: a key that sees every tenant).
_SEEN = "($2::text IS NULL OR tenant = $2)"

# An expired upload is gone for callers even before retention deletes it.
SELECT_ONE = f"""
SELECT {COLUMNS} FROM uploads WHERE upload_id = $1 AND expires_at > now() AND {_SEEN}
"""

# The sizes of those of the uploads $1 a new job of the tenant $2 may use: its own,
# present and not expired.
SELECT_LIVE_SIZES = """
SELECT upload_id, size FROM uploads
WHERE upload_id = ANY($1::text[]) AND expires_at > now() AND tenant = $2
"""

DELETE = f"DELETE FROM uploads WHERE upload_id = $1 AND {_SEEN} RETURNING upload_id"

# Chunks go with their upload (a trigger, migration 0021). An upload a live job still uses stays
# until that job ends (finished, failed, cancelled: its row's job_inputs then no longer
# count), then goes at the next round: it lives max(its expiry, the job's end). A pending
# job released for a retry is live, so its inputs stay for the next attempt.
DELETE_EXPIRED = f"""
DELETE FROM uploads AS u WHERE u.expires_at <= now() AND NOT EXISTS (
    SELECT 1 FROM job_inputs AS i JOIN jobs AS j ON j.job_id = i.job_id
    WHERE i.upload_id = u.upload_id AND j.status NOT IN {TERMINAL_SQL}
)
"""
