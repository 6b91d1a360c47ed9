"""Each replica's memory of API keys: which caller a presented key stands for.

Every request with a key asks, and most ask about a key asked about a moment ago, so the
answer (a caller, or "no such key") is kept CACHE_SECONDS. A revoke reaches every replica
at once: its DELETE notifies KEYS_CHANGED in the same commit and each replica drops the
key on hearing it; the short life of an entry bounds a notification lost meanwhile, and a
LISTEN connection that comes back clears everything. A lookup that was already on its way
when a notice came is answered but not kept, so it cannot put a revoked key back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tower.access import Caller
from tower.db.pool import Pool
from tower.tenants import keys, queries

CACHE_SECONDS = 1.0
# Entries kept at most: a flood of made-up keys cannot grow the replica's memory.
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class _Entry:
    caller: Caller | None
    until: float


class KeyCache:
    def __init__(self, pool: Pool, ttl: float = CACHE_SECONDS) -> None:
        self._pool = pool
        self._ttl = ttl
        self._entries: dict[str, _Entry] = {}
        # Lookups on their way, by digest: concurrent requests with one key share one.
        self._lookups: dict[str, asyncio.Future[Caller | None]] = {}
        # Bumped by every notice: a lookup that began before one is not kept.
        self._generation = 0
        # The open streams and long polls of each key, ended when it is revoked.
        self._watchers: dict[str, set[asyncio.Event]] = {}

    async def caller(self, presented: str) -> Caller | None:
        if not keys.looks_like_key(presented):
            return None
        digest = keys.digest(presented)
        entry = self._entries.get(digest)
        if entry is not None and entry.until > time.monotonic():
            return entry.caller
        lookup = self._lookups.get(digest)
        if lookup is None:
            lookup = asyncio.ensure_future(self._look_up(digest))
            self._lookups[digest] = lookup
            lookup.add_done_callback(lambda done: self._looked_up(digest, done))
        # Shielded: a request that goes away does not cancel the others' answer.
        return await asyncio.shield(lookup)

    def _looked_up(self, digest: str, done: asyncio.Future[Caller | None]) -> None:
        self._lookups.pop(digest, None)
        if not done.cancelled():
            done.exception()  # retrieved here: every request waiting may have gone

    async def _look_up(self, digest: str) -> Caller | None:
        generation = self._generation
        row = await self._pool.fetchrow(queries.SELECT_KEY_BY_DIGEST, digest)
        # The index found it by digest; the comparison says so again in constant time.
        found = _caller(row) if row and hmac.compare_digest(row["key_sha256"], digest) else None
        if generation == self._generation:
            self._keep(digest, found)
        return found

    def _keep(self, digest: str, caller: Caller | None) -> None:
        if len(self._entries) >= MAX_ENTRIES:
            self._drop_expired()
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[digest] = _Entry(caller, time.monotonic() + self._ttl)

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for digest in [d for d, entry in self._entries.items() if entry.until <= now]:
            del self._entries[digest]

    @contextlib.contextmanager
    def revocation(self, key_id: str) -> Iterator[asyncio.Event]:
        """An event set when `key_id` is revoked, while the block runs."""
        event = asyncio.Event()
        watchers = self._watchers.setdefault(key_id, set())
        watchers.add(event)
        try:
            yield event
        finally:
            watchers.discard(event)
            if not watchers:
                self._watchers.pop(key_id, None)

    def forget(self, key_id: str) -> None:
        """A KEYS_CHANGED notice: the key `key_id` was revoked (or one was made, so a key
        cached as unknown may exist now). What is open with it ends."""
        self._generation += 1
        for digest, entry in list(self._entries.items()):
            if entry.caller is None or entry.caller.key_id == key_id:
                del self._entries[digest]
        for event in self._watchers.get(key_id, ()):
            event.set()

    def clear(self) -> None:
        """The LISTEN connection came back: notices may have been missed."""
        self._generation += 1
        self._entries.clear()


def _caller(row: Any) -> Caller:
    return Caller(row["tenant"], row["role"], row["name"], row["key_id"])
