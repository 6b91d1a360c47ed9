"""Every SQL statement of the credentials domain. The sealed secret is read by exactly
one statement (SELECT_SEALED), used only where tower itself needs the secret."""

from __future__ import annotations

# Metadata only: what the API may show.
COLUMNS = "name, kind, username, api_url, created_at, updated_at"

# Returns no row when the name is taken (POST answers 409 then).
INSERT_NEW = f"""
INSERT INTO credentials (name, kind, username, api_url, sealed, key_id)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (tenant, name) DO NOTHING
RETURNING {COLUMNS}
"""

SELECT_ALL = f"SELECT {COLUMNS} FROM credentials ORDER BY name"

SELECT_ONE = f"SELECT {COLUMNS} FROM credentials WHERE name = $1"

SELECT_SEALED = f"SELECT {COLUMNS}, sealed, key_id FROM credentials WHERE name = $1"

DELETE = "DELETE FROM credentials WHERE name = $1 RETURNING name"
