"""Profiles, engines and templates, cached per replica and refreshed on NOTIFY.

The configs table is the truth. Every write announces `kind/name` on CONFIGS_CHANGED in
its transaction; each replica's store then re-reads that one row. After the LISTEN
connection comes back, a notification may have been missed, so everything is re-read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from tower.configs import queries, renderer
from tower.configs.defaults import shipped_defaults
from tower.configs.models import Config, Engine, Profile, Template
from tower.configs.parse import parse_config
from tower.configs.values import resolve_vars
from tower.db.channels import CONFIGS_CHANGED
from tower.errors import Invalid, TowerError

log = logging.getLogger(__name__)

C = TypeVar("C", Profile, Engine, Template)

ChangeListener = Callable[[str, str], None]


@dataclass(frozen=True)
class Entry:
    """One cached row. `config` is None (and `error` says why) when the stored content
    no longer parses, e.g. after an upgrade tightened a format."""

    kind: str
    name: str
    content: str
    updated_at: datetime
    config: Config | None
    error: str | None


def make_entry(row: Mapping[str, Any]) -> Entry:
    try:
        config: Config | None = parse_config(row["kind"], row["name"], row["content"])
        error = None
    except TowerError as problem:
        config, error = None, problem.message
        log.warning("stored %s %r is invalid: %s", row["kind"], row["name"], error)
    return Entry(row["kind"], row["name"], row["content"], row["updated_at"], config, error)


class ConfigStore:
    def __init__(self, pool: Any, hub: Any, *, defaults_root: Path | None = None) -> None:
        self.pool = pool
        self.hub = hub
        self._defaults_root = defaults_root
        self._entries: dict[tuple[str, str], Entry] = {}
        # Reloads run one at a time, in notification order, so a slow read of an old
        # version can never overwrite a newer one in the cache.
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._listeners: list[ChangeListener] = []
        hub.on(CONFIGS_CHANGED, self._on_notify)
        hub.on_reconnect(self._on_reconnect)

    # --- lifecycle -------------------------------------------------------------------

    async def load(self) -> None:
        """Seed the shipped defaults (absent or unedited rows), then fill the cache."""
        defaults = shipped_defaults(self._defaults_root)
        columns = [[row[i] for row in defaults] for i in range(3)]
        async with self.pool.acquire() as connection:
            written = await connection.fetch(queries.SEED_DEFAULTS, *columns)
        for row in written:
            if row["kept_edit"]:
                log.warning(
                    "%s %r keeps the operator's edit; a newer version of it ships with this"
                    " tower (docs/configs.md says how to take it)",
                    row["kind"],
                    row["name"],
                )
        await self.reload_all()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # The replica renders no more of these templates: its renderer processes can go.
        await asyncio.to_thread(renderer.close)

    def on_change(self, listener: ChangeListener) -> None:
        """Call `listener(kind, name)` after the cached entry for kind/name changed."""
        self._listeners.append(listener)

    # --- reading the cache -------------------------------------------------------------

    def entry(self, kind: str, name: str) -> Entry | None:
        return self._entries.get((kind, name))

    def entries(self, kind: str) -> list[Entry]:
        return [entry for (k, _), entry in sorted(self._entries.items()) if k == kind]

    def profile(self, name: str) -> Profile | None:
        return _typed(self.entry("profile", name), Profile)

    def engine(self, name: str) -> Engine | None:
        return _typed(self.entry("engine", name), Engine)

    def template(self, name: str) -> Template | None:
        return _typed(self.entry("template", name), Template)

    def profile_names(self) -> list[str]:
        return [entry.name for entry in self.entries("profile") if entry.config is not None]

    def memory_limits(self) -> list[str | None]:
        """Each profile's memory limit (None: the default, WORKER_MEM_LIMIT)."""
        found = (self.profile(name) for name in self.profile_names())
        return [profile.resources.memory for profile in found if profile is not None]

    def engine_names(self) -> list[str]:
        return [entry.name for entry in self.entries("engine") if entry.config is not None]

    def validate_job(self, profile: str, engine: str, prompt_vars: dict[str, Any]) -> None:
        """Raise Invalid naming the offending field: "profile", "engine" or
        "prompt_vars.<name>"."""
        found = self.profile(profile)
        if found is None:
            known = ", ".join(self.profile_names())
            raise Invalid(f"unknown profile {profile!r} (known: {known})", field="profile")
        if self.engine(engine) is None:
            known = ", ".join(self.engine_names())
            raise Invalid(f"unknown engine {engine!r} (known: {known})", field="engine")
        resolve_vars(found.name, found.vars, prompt_vars)

    # --- refreshing --------------------------------------------------------------------

    async def reload(self, kind: str, name: str) -> None:
        async with self._reload_lock:
            async with self.pool.acquire() as connection:
                row = await connection.fetchrow(queries.SELECT_ONE, kind, name)
            before = self._entries.pop((kind, name), None)
            if row is not None:
                self._entries[(kind, name)] = make_entry(row)
            if before != self._entries.get((kind, name)):
                self._announce(kind, name)

    async def reload_all(self) -> None:
        async with self._reload_lock:
            async with self.pool.acquire() as connection:
                rows = await connection.fetch(queries.SELECT_ALL)
            before, self._entries = self._entries, {}
            for row in rows:
                self._entries[(row["kind"], row["name"])] = make_entry(row)
            for key in sorted(before.keys() | self._entries.keys()):
                if before.get(key) != self._entries.get(key):
                    self._announce(*key)

    def _on_notify(self, payload: str) -> None:
        kind, _, name = payload.partition("/")
        if not name:
            log.warning("ignoring malformed %s payload %r", CONFIGS_CHANGED, payload)
            return
        self._spawn(self._reload_logged(kind, name))

    def _on_reconnect(self) -> None:
        # In the background: the hub awaits its reconnect callbacks, and right after a
        # database restart the pool may need a few tries before a reload succeeds.
        self._spawn(self._reload_all_until_done())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload_logged(self, kind: str, name: str) -> None:
        # A failed reload is not fatal: the hub's reconnect triggers a full reload.
        try:
            await self.reload(kind, name)
        except Exception:
            log.exception("reloading %s/%s failed", kind, name)

    async def _reload_all_until_done(self) -> None:
        delay = 0.1
        while True:
            try:
                await self.reload_all()
                return
            except Exception as error:
                log.warning("reloading configs failed (%s); retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _announce(self, kind: str, name: str) -> None:
        for listener in self._listeners:
            try:
                listener(kind, name)
            except Exception:
                log.exception("config change listener failed for %s/%s", kind, name)


def _typed(entry: Entry | None, model: type[C]) -> C | None:
    if entry is None or not isinstance(entry.config, model):
        return None
    return entry.config
