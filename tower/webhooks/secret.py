"""The webhook signing secret: WEBHOOK_SECRET, or one generated once and shared.

With no WEBHOOK_SECRET, the first replica to start generates a secret and stores it in
`tower_secrets`; every replica (and `parpaing webhook-secret`) reads that same row, so
the all-in-one mode signs webhooks with no configuration and the key survives restarts.
"""

from __future__ import annotations

import logging

from tower.db.pool import Pool
from tower.webhooks import signing

log = logging.getLogger(__name__)

NAME = "webhook_secret"

# Insert if absent, then read: concurrent first starts agree on the first insert.
INSERT_IF_ABSENT = """
INSERT INTO tower_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING
RETURNING name
"""
SELECT = "SELECT value FROM tower_secrets WHERE name = $1"


async def webhook_secret(configured: str, pool: Pool) -> str:
    """The secret in force: the configured one, else the stored (maybe new) one."""
    if configured:
        signing.signing_key(configured)  # a malformed secret stops the start, saying why
        return configured
    if await pool.fetchval(INSERT_IF_ABSENT, NAME, signing.new_secret()) is not None:
        log.warning(
            "WEBHOOK_SECRET is not set: generated one and stored it in the database; "
            "`parpaing webhook-secret` prints it for your webhook receivers"
        )
    stored: str = await pool.fetchval(SELECT, NAME)
    return stored
