"""Retention: deletes old finished jobs, expired idempotency keys, expired uploads and
expired session state.

A finished job whose idempotency key is still live is kept, so a retry within
IDEMPOTENCY_TTL_HOURS replays it rather than making a second job.

Runs every `cleanup_interval` on every replica, but a transaction-scoped advisory
lock lets only one replica work per round; the others skip it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tower.db.periodic import Periodic
from tower.db.pool import Pool, transaction
from tower.queue import queries
from tower.sessions import service as sessions
from tower.settings import Settings
from tower.uploads import service as uploads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cleaned:
    expired_jobs: int = 0
    surplus_jobs: int = 0
    idempotency_keys: int = 0
    uploads: int = 0
    session_states: int = 0


class Retention:
    def __init__(self, settings: Settings, pool: Pool) -> None:
        self._settings = settings
        self._pool = pool
        self._loop = Periodic("retention", settings.cleanup_interval, self._round)

    async def start(self) -> None:
        await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def clean_once(self) -> Cleaned | None:
        """One round; None when another replica holds the lock."""
        settings = self._settings
        async with transaction(self._pool) as connection:
            if not await queries.try_retention_lock(connection):
                return None
            # A job whose idempotency key is still live survives both deletes (its key
            # would cascade with it); once the key expires, the job goes like any other.
            key_ttl = settings.idempotency_ttl_hours
            return Cleaned(
                expired_jobs=await queries.delete_expired_jobs(
                    connection, settings.job_ttl_hours, key_ttl
                ),
                surplus_jobs=await queries.delete_surplus_jobs(
                    connection, settings.max_retained_jobs, key_ttl
                ),
                idempotency_keys=await queries.delete_expired_idempotency_keys(
                    connection, settings.idempotency_ttl_hours
                ),
                uploads=await uploads.delete_expired(connection),
                session_states=await sessions.delete_expired_state(
                    connection, settings.session_ttl_hours
                ),
            )

    async def _round(self) -> None:
        cleaned = await self.clean_once()
        if cleaned is not None and cleaned != Cleaned():
            log.info("retention: %s", cleaned)
