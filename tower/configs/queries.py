"""Every SQL statement of the configs domain."""

from __future__ import annotations

from tower.queue.channels import CONFIGS_CHANGED

# Seeds the shipped defaults. Replicas start together, so a (kind, name) already there
# (seeded by another replica, or edited by an operator) is left alone; the rows this
# call did insert are announced so replicas already running pick them up.
SEED_DEFAULTS = f"""
WITH inserted AS (
    INSERT INTO configs (kind, name, content)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
    ON CONFLICT (kind, name) DO NOTHING
    RETURNING kind, name
)
SELECT pg_notify('{CONFIGS_CHANGED}', kind || '/' || name) FROM inserted
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
