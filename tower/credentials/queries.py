"""Every SQL statement of the credentials domain. The sealed secret is read by exactly
one statement (SELECT_SEALED), used only where tower itself needs the secret."""

from __future__ import annotations

# Metadata only: what the API may show.
COLUMNS = "tenant, name, kind, username, api_url, created_at, updated_at"

# A credential is its tenant's: names are per tenant ($7 below, $2 in the others).
# Returns no row when the tenant has the name already (POST answers 409 then).
INSERT_NEW = f"""
INSERT INTO credentials (name, kind, username, api_url, sealed, key_id, tenant)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (tenant, name) DO NOTHING
RETURNING {COLUMNS}
"""

# One tenant's ($1), or every tenant's ($1 NULL).
SELECT_ALL = f"""
SELECT {COLUMNS} FROM credentials WHERE $1::text IS NULL OR tenant = $1 ORDER BY tenant, name
"""

SELECT_ONE = f"SELECT {COLUMNS} FROM credentials WHERE name = $1 AND tenant = $2"

SELECT_SEALED = f"""
SELECT {COLUMNS}, sealed, key_id FROM credentials WHERE name = $1 AND tenant = $2
"""

# The credential a job's repository names: its own tenant's, never another's ($2: the job).
SELECT_SEALED_OF_JOB = f"""
SELECT {", ".join(f"c.{column}" for column in COLUMNS.split(", "))}, c.sealed, c.key_id
FROM credentials AS c JOIN jobs AS j ON j.tenant = c.tenant
WHERE c.name = $1 AND j.job_id = $2
"""

DELETE = "DELETE FROM credentials WHERE name = $1 AND tenant = $2 RETURNING name"
