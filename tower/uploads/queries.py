"""Every SQL statement of the uploads domain."""

from __future__ import annotations

COLUMNS = "upload_id, kind, filename, size, sha256, entries, created_at, expires_at"

INSERT_UPLOAD = f"""
INSERT INTO uploads (upload_id, kind, filename, size, sha256, entries, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(hours => $7))
RETURNING {COLUMNS}
"""

# An upload's bytes, in order: one row per CHUNK_BYTES (the last one shorter).
INSERT_CHUNK = "INSERT INTO upload_chunks (upload_id, seq, data) VALUES ($1, $2, $3)"

# An expired upload is gone for callers even before retention deletes it.
SELECT_ONE = f"SELECT {COLUMNS} FROM uploads WHERE upload_id = $1 AND expires_at > now()"

SELECT_CHUNK = "SELECT data FROM upload_chunks WHERE upload_id = $1 AND seq = $2"

DELETE = "DELETE FROM uploads WHERE upload_id = $1 RETURNING upload_id"

# Chunks go with their upload (ON DELETE CASCADE).
DELETE_EXPIRED = "DELETE FROM uploads WHERE expires_at <= now()"
