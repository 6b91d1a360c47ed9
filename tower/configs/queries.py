"""Every SQL statement of the configs domain."""

from __future__ import annotations

from tower.db.channels import CONFIGS_CHANGED

# Seeds the shipped defaults. `shipped_content` is the latest shipped version this
# database has seen; a row whose content still equals it is unedited. For each shipped
# file: absent, it is inserted; present, when a version the database has not seen ships,
# an unedited row takes it and an edited one keeps its content (the statement reports it,
# once per shipped version, for the log). Replicas start together: a version already seen
# is not written again, so concurrent seeds of one version write each row once. Written
# rows are announced so replicas already running pick them up.
SEED_DEFAULTS = f"""
WITH written AS (
    INSERT INTO configs AS c (kind, name, content, shipped_content)
    SELECT kind, name, content, content
    FROM unnest($1::text[], $2::text[], $3::text[]) AS shipped (kind, name, content)
    ON CONFLICT (kind, name) DO UPDATE SET
        content = CASE WHEN c.content = c.shipped_content
                       THEN EXCLUDED.content ELSE c.content END,
        updated_at = CASE WHEN c.content = c.shipped_content
                          THEN now() ELSE c.updated_at END,
        shipped_content = EXCLUDED.content
    WHERE c.shipped_content IS DISTINCT FROM EXCLUDED.content
    RETURNING c.kind, c.name, c.content <> c.shipped_content AS kept_edit
)
SELECT kind, name, kept_edit, pg_notify('{CONFIGS_CHANGED}', kind || '/' || name) AS notified
FROM written
"""

SELECT_ALL = "SELECT kind, name, content, updated_at FROM configs"

SELECT_ONE = "SELECT kind, name, content, updated_at FROM configs WHERE kind = $1 AND name = $2"

SELECT_NAMES = "SELECT name FROM configs WHERE kind = $1 ORDER BY name"

SELECT_KIND = "SELECT name, content FROM configs WHERE kind = $1 ORDER BY name"

# Which of the given names exist, to check a profile's references before writing it.
SELECT_EXISTING = "SELECT name, content FROM configs WHERE kind = $1 AND name = ANY($2::text[])"

# Config writes are rare; serialising them makes the reference checks (a profile
# naming a template, a template being deleted) race-free across replicas.
LOCK_WRITES = "SELECT pg_advisory_xact_lock(hashtext('parpaing_configs_write'))"

# Returns no row when the config already exists (POST answers 409 then).
INSERT_NEW = """
INSERT INTO configs (kind, name, content) VALUES ($1, $2, $3)
ON CONFLICT (kind, name) DO NOTHING
RETURNING kind, name, content, updated_at
"""

UPSERT = """
INSERT INTO configs (kind, name, content) VALUES ($1, $2, $3)
ON CONFLICT (kind, name) DO UPDATE SET content = EXCLUDED.content, updated_at = now()
RETURNING kind, name, content, updated_at
"""

DELETE = "DELETE FROM configs WHERE kind = $1 AND name = $2 RETURNING name"

# Sent inside the writing transaction, so it is delivered only if the write commits.
NOTIFY_CHANGED = f"SELECT pg_notify('{CONFIGS_CHANGED}', $1::text || '/' || $2::text)"
