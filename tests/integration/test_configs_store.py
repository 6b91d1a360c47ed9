"""The config store on a real PostgreSQL: seeding, and changes reaching every replica."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tower.configs import service
from tower.configs.defaults import shipped_defaults
from tower.configs.store import ConfigStore
from tower.db.migrate import migrate
from tower.db.notify import NotifyHub
from tower.db.pool import create_pool
from tower.errors import Conflict, Invalid, NotFound

EVENT_DEADLINE = 10.0
SHIPPED = shipped_defaults()


@contextlib.asynccontextmanager
async def replica(database_url: str, root: Path | None = None) -> AsyncIterator[ConfigStore]:
    """One replica's view: its own pool, its own LISTEN hub, its own store."""
    pool = await create_pool(database_url, 4)
    hub = NotifyHub(database_url)
    await hub.start()
    store = ConfigStore(pool, hub) if root is None else ConfigStore(pool, hub, defaults_root=root)
    try:
        await store.load()
        yield store
    finally:
        await store.close()
        await hub.stop()
        await pool.close()


def change_event(store: ConfigStore, kind: str, name: str) -> asyncio.Event:
    event = asyncio.Event()
    store.on_change(lambda k, n: event.set() if (k, n) == (kind, name) else None)
    return event


async def wait_for(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), EVENT_DEADLINE)


async def fetch_content(database_url: str, kind: str, name: str) -> str | None:
    connection = await asyncpg.connect(database_url)
    try:
        content: str | None = await connection.fetchval(
            "SELECT content FROM configs WHERE kind = $1 AND name = $2", kind, name
        )
        return content
    finally:
        await connection.close()


# --- seeding ---------------------------------------------------------------------------


async def test_first_load_seeds_every_shipped_file(database_url: str) -> None:
    async with replica(database_url) as store:
        for kind, name, content in SHIPPED:
            entry = store.entry(kind, name)
            assert entry is not None, f"{kind}/{name}"
            assert entry.content == content
            assert entry.error is None
        assert "default" in store.profile_names()
        assert set(store.engine_names()) >= {"claude-code", "opencode", "codex", "gemini", "aider"}


async def test_second_load_keeps_an_operator_edit(database_url: str) -> None:
    async with replica(database_url) as store:
        edited = 'description = "edited by the operator"\n'
        await service.put_config(store.pool, store, "profile", "researcher", edited)
    async with replica(database_url) as store:
        assert store.entry("profile", "researcher") is not None
        assert await fetch_content(database_url, "profile", "researcher") == edited
        researcher = store.profile("researcher")
        assert researcher is not None
        assert researcher.description == "edited by the operator"


async def test_replicas_seeding_at_once_all_succeed(database_url: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        stores = await asyncio.gather(
            *(stack.enter_async_context(replica(database_url)) for _ in range(4))
        )
        for store in stores:
            assert store.profile_names() == sorted(
                name for kind, name, _ in SHIPPED if kind == "profile"
            )


async def test_a_newly_shipped_file_reaches_a_running_replica(
    database_url: str, tmp_path: Path
) -> None:
    # An upgraded replica seeds a file the running one has never seen.
    for directory in ("profiles", "engines", "templates"):
        (tmp_path / directory).mkdir()
    (tmp_path / "engines" / "new-engine.toml").write_text(
        'name = "New"\nbinary = "new"\noutput = "text"\n[prompt]\nvia = "stdin"\n'
    )
    async with replica(database_url) as running:
        seen = change_event(running, "engine", "new-engine")
        async with replica(database_url, root=tmp_path):
            await wait_for(seen)
        assert "new-engine" in running.engine_names()


def shipped_root(tmp_path: Path, **files: str) -> Path:
    """A defaults root shipping only the given files (`"profiles/researcher.toml"=...`)."""
    for directory in ("profiles", "engines", "templates"):
        (tmp_path / directory).mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        (tmp_path / relative).write_text(content)
    return tmp_path


def researcher_version(description: str) -> dict[str, str]:
    original = next(c for k, n, c in SHIPPED if (k, n) == ("profile", "researcher"))
    marker = original.splitlines()[0]
    return {"profiles/researcher.toml": original.replace(marker, f"# {description}\n{marker}")}


def seeded_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "keeps the operator's edit" in r.getMessage()]


async def test_an_unedited_shipped_config_follows_an_upgrade_on_every_replica(
    database_url: str, tmp_path: Path
) -> None:
    newer = researcher_version("fixed in a later release")
    async with replica(database_url) as running:
        seen = change_event(running, "profile", "researcher")
        async with replica(database_url, root=shipped_root(tmp_path, **newer)):
            await wait_for(seen)
        entry = running.entry("profile", "researcher")
        assert entry is not None
        assert entry.content == newer["profiles/researcher.toml"]


async def test_an_edited_config_survives_upgrades_with_one_warning_until_reverted(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    edited = 'description = "edited by the operator"\n'
    async with replica(database_url) as store:
        await service.put_config(store.pool, store, "profile", "researcher", edited)
    second, third = researcher_version("second release"), researcher_version("third release")
    async with replica(database_url, root=shipped_root(tmp_path / "2", **second)):
        pass
    async with replica(database_url, root=shipped_root(tmp_path / "2b", **second)):
        pass
    assert await fetch_content(database_url, "profile", "researcher") == edited
    assert seeded_warnings(caplog) == [
        "profile 'researcher' keeps the operator's edit; a newer version of it ships with this"
        " tower (docs/configs.md says how to take it)"
    ]
    # Taking the shipped version back makes the row follow the next release.
    async with replica(database_url, root=shipped_root(tmp_path / "2c", **second)) as store:
        shipped = second["profiles/researcher.toml"]
        await service.put_config(store.pool, store, "profile", "researcher", shipped)
    async with replica(database_url, root=shipped_root(tmp_path / "3", **third)):
        pass
    followed = await fetch_content(database_url, "profile", "researcher")
    assert followed == third["profiles/researcher.toml"]
    assert len(seeded_warnings(caplog)) == 1


async def test_rows_from_before_shipped_versions_were_tracked_follow_unless_edited(
    empty_database: str,
) -> None:
    await migrate(empty_database, "0005")
    connection = await asyncpg.connect(empty_database)
    try:
        old = "# as an older release shipped it\n"
        await connection.executemany(
            "INSERT INTO configs (kind, name, content, created_at, updated_at)"
            " VALUES ($1, $2, $3, now() - interval '1 day', now() - make_interval(hours => $4))",
            [("engine", "codex", old, 24), ("profile", "researcher", old, 1)],
        )
    finally:
        await connection.close()
    await migrate(empty_database)
    async with replica(empty_database):
        pass
    codex = next(c for k, n, c in SHIPPED if (k, n) == ("engine", "codex"))
    assert await fetch_content(empty_database, "engine", "codex") == codex  # never written
    assert await fetch_content(empty_database, "profile", "researcher") == old  # PUT once


# --- propagation -----------------------------------------------------------------------


async def test_a_write_on_one_replica_is_seen_by_the_other(database_url: str) -> None:
    async with replica(database_url) as first, replica(database_url) as second:
        created = change_event(second, "template", "greeting")
        await service.create_config(first.pool, first, "template", "greeting", "Hi {{ prompt }}")
        assert first.template("greeting") is not None  # the writer sees its own write at once
        await wait_for(created)
        template = second.template("greeting")
        assert template is not None
        assert template.source == "Hi {{ prompt }}"

        deleted = change_event(second, "template", "greeting")
        await service.delete_config(first.pool, first, "template", "greeting")
        await wait_for(deleted)
        assert second.template("greeting") is None


async def test_a_profile_change_changes_job_validation_on_the_other_replica(
    database_url: str,
) -> None:
    async with replica(database_url) as first, replica(database_url) as second:
        second.validate_job("default", "claude-code", {})
        changed = change_event(second, "profile", "default")
        content = '[vars.ticket]\ntype = "integer"\nrequired = true\n'
        await service.put_config(first.pool, first, "profile", "default", content)
        await wait_for(changed)
        with pytest.raises(Invalid) as caught:
            second.validate_job("default", "claude-code", {})
        assert caught.value.field == "prompt_vars.ticket"
        second.validate_job("default", "claude-code", {"ticket": 42})


async def test_a_lost_listen_connection_is_followed_by_a_full_reload(database_url: str) -> None:
    async with replica(database_url) as store:
        # A change whose notification the replica never receives...
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(
                "UPDATE configs SET content = $1 WHERE kind = 'profile' AND name = 'researcher'",
                'description = "changed while deaf"\n',
            )
            reloaded = change_event(store, "profile", "researcher")
            # ...then the LISTEN connection drops; the hub reconnects and the store re-reads all.
            await connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
        finally:
            await connection.close()
        await wait_for(reloaded)
        researcher = store.profile("researcher")
        assert researcher is not None
        assert researcher.description == "changed while deaf"


# --- validate_job ----------------------------------------------------------------------


async def test_validate_job_names_the_unknown_profile_or_engine(database_url: str) -> None:
    async with replica(database_url) as store:
        with pytest.raises(Invalid) as caught:
            store.validate_job("nope", "claude-code", {})
        assert caught.value.field == "profile"
        with pytest.raises(Invalid) as caught:
            store.validate_job("default", "nope", {})
        assert caught.value.field == "engine"
        with pytest.raises(Invalid) as caught:
            store.validate_job("code-review", "claude-code", {"max_findings": "many"})
        assert caught.value.field == "prompt_vars.max_findings"
        store.validate_job("code-review", "codex", {"focus": "security", "max_findings": 5})


async def test_a_stored_config_that_no_longer_parses_is_unavailable_not_fatal(
    database_url: str,
) -> None:
    async with replica(database_url) as store:
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(
                "UPDATE configs SET content = 'binary = 3' WHERE kind = 'engine' AND name = 'aider'"
            )
        finally:
            await connection.close()
        await store.reload("engine", "aider")
        assert "aider" not in store.engine_names()
        engines = {engine.id: engine for engine in service.list_engines(store).engines}
        assert engines["aider"].available is False
        assert engines["claude-code"].available is True


# --- write rules -----------------------------------------------------------------------


async def test_writes_enforce_references_and_protect_what_is_in_use(database_url: str) -> None:
    async with replica(database_url) as store:
        pool = store.pool
        with pytest.raises(Invalid, match="'missing' does not exist"):
            await service.put_config(pool, store, "profile", "p", 'prompt_template = "missing"\n')
        with pytest.raises(Invalid, match="engine 'missing' does not exist"):
            await service.put_config(pool, store, "profile", "p", 'engine = "missing"\n')
        with pytest.raises(Invalid, match="undeclared variable"):
            await service.put_config(
                pool, store, "profile", "p", 'prompt_template = "code-review"\n'
            )
        with pytest.raises(Conflict, match="code-review"):
            await service.delete_config(pool, store, "template", "code-review")
        with pytest.raises(Conflict, match="default"):
            await service.delete_config(pool, store, "engine", "claude-code")
        with pytest.raises(Conflict):
            await service.delete_config(pool, store, "profile", "default")
        with pytest.raises(NotFound):
            await service.delete_config(pool, store, "profile", "never-existed")
        with pytest.raises(Conflict, match="already exists"):
            aider = next(c for k, n, c in SHIPPED if (k, n) == ("engine", "aider"))
            await service.create_config(pool, store, "engine", "aider", aider)
        # Once no profile uses it, a template can go.
        await service.delete_config(pool, store, "profile", "code-review")
        await service.delete_config(pool, store, "template", "code-review")
        assert await fetch_content(database_url, "template", "code-review") is None
        assert store.template("code-review") is None
