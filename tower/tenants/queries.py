"""Every SQL statement of the tenants domain: tenants and their quotas, API keys."""

from __future__ import annotations

from tower.db.channels import KEYS_CHANGED, TENANTS_CHANGED

KEY_COLUMNS = "key_id, tenant, role, name, hint, created_at"

QUOTA_COLUMNS = (
    "max_running",
    "submits_per_minute",
    "spend_per_day_usd",
    "spend_per_month_usd",
    "max_queued",
    "share",
)
TENANT_COLUMNS = f"name, {', '.join(QUOTA_COLUMNS)}, created_at, updated_at"

# A key's tenant exists from its first key on, with the default quotas.
ENSURE_TENANT = "INSERT INTO tenants (name) VALUES ($1) ON CONFLICT (name) DO NOTHING"

# No row when the tenant already has a key of that name (409).
INSERT_KEY = f"""
INSERT INTO api_keys (key_id, key_sha256, tenant, role, name, hint)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (tenant, name) DO NOTHING
RETURNING {KEY_COLUMNS}
"""

# Every key, or one tenant's ($1 NULL: all), oldest first.
SELECT_KEYS = f"""
SELECT {KEY_COLUMNS} FROM api_keys
WHERE $1::text IS NULL OR tenant = $1
ORDER BY created_at, key_id
"""

# The key a presented key's digest names (api_keys_sha256).
SELECT_KEY_BY_DIGEST = f"SELECT {KEY_COLUMNS}, key_sha256 FROM api_keys WHERE key_sha256 = $1"

# Revoke: the row goes, and every replica hears it in the same commit (its cache of
# keys drops it: tower/tenants/cache.py).
DELETE_KEY = f"""
WITH deleted AS (DELETE FROM api_keys WHERE key_id = $1 RETURNING key_id)
SELECT key_id, pg_notify('{KEYS_CHANGED}', key_id) FROM deleted
"""

# A new key: replicas drop what they cached as unknown (a key tried before it existed).
NOTIFY_NEW_KEY = f"SELECT pg_notify('{KEYS_CHANGED}', $1)"

# Set a tenant's quotas (every one: NULL is the default), creating the tenant if needed;
# replicas reload the tenant's quotas on the notification.
PUT_TENANT = f"""
WITH written AS (
    INSERT INTO tenants (name, {", ".join(QUOTA_COLUMNS)})
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (name) DO UPDATE SET
        {", ".join(f"{column} = EXCLUDED.{column}" for column in QUOTA_COLUMNS)},
        updated_at = now()
    RETURNING {TENANT_COLUMNS}
)
SELECT written.*, pg_notify('{TENANTS_CHANGED}', written.name) AS notified FROM written
"""

SELECT_TENANT = f"SELECT {TENANT_COLUMNS} FROM tenants WHERE name = $1"

SELECT_TENANTS = f"SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name"
