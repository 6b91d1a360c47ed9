"""What the /profiles, /engines and /configs routes do.

Reads of /configs go to the table (the truth); /profiles and /engines answer from the
replica's cache. A write re-reads its own row into this replica's cache before it
returns, so a client sees its change on the next request to the same replica; the
other replicas see it when the NOTIFY sent by the write reaches them.
"""

from __future__ import annotations

from typing import Any

from tower.configs import queries
from tower.configs.models import Engine, Profile
from tower.configs.parse import (
    check_kind,
    check_name,
    converted,
    parse_config,
    parse_profile,
)
from tower.configs.render import undeclared_names
from tower.configs.schemas import (
    ConfigNames,
    ConfigOut,
    EngineList,
    EngineOut,
    ProfileList,
    ProfileOut,
    PromptVarOut,
)
from tower.configs.store import ConfigStore
from tower.db.pool import Pool, transaction
from tower.errors import Conflict, Invalid, NotFound, TowerError

PROTECTED = {("profile", "default")}  # jobs fall back to it; it must always exist
TEMPLATE_CONTEXT = {"prompt", "profile"}  # names every prompt template sees


# --- public listings (from the cache) --------------------------------------------------


def list_profiles(store: ConfigStore) -> ProfileList:
    profiles = [store.profile(name) for name in store.profile_names()]
    return ProfileList(profiles=[_profile_out(p) for p in profiles if p is not None])


def list_engines(store: ConfigStore) -> EngineList:
    """`available` is true when the engine's config is valid. Whether the worker image
    actually ships its binary is checked later, by the Docker runner."""
    engines = []
    for entry in store.entries("engine"):
        config = entry.config if isinstance(entry.config, Engine) else None
        engines.append(
            EngineOut(
                id=entry.name,
                name=config.name if config else entry.name,
                description=config.description if config else "",
                available=config is not None,
            )
        )
    return EngineList(engines=engines)


def _profile_out(profile: Profile) -> ProfileOut:
    variables = [
        PromptVarOut(
            name=name,
            type=spec.type,
            required=spec.required,
            default=spec.default,
            enum=spec.enum,
            description=spec.description,
        )
        for name, spec in profile.vars.items()
    ]
    return ProfileOut(
        name=profile.name,
        description=profile.description,
        model=profile.model,
        engine=profile.engine,
        prompt_vars=variables,
    )


# --- /configs reads (from the table) ------------------------------------------------------


async def get_config(pool: Pool, kind: str, name: str) -> ConfigOut:
    check_kind(kind)
    check_name(name)
    async with pool.acquire() as connection:
        row = await connection.fetchrow(queries.SELECT_ONE, kind, name)
    if row is None:
        raise NotFound(f"{kind} {name!r} not found")
    return _config_out(row)


async def list_config_names(pool: Pool, kind: str) -> ConfigNames:
    check_kind(kind)
    async with pool.acquire() as connection:
        rows = await connection.fetch(queries.SELECT_NAMES, kind)
    return ConfigNames(type=kind, names=[row["name"] for row in rows])


def _config_out(row: Any) -> ConfigOut:
    return ConfigOut(
        type=row["kind"], name=row["name"], content=row["content"], updated_at=row["updated_at"]
    )


# --- writes ----------------------------------------------------------------------------


async def create_config(
    pool: Pool, store: ConfigStore, kind: str, name: str, content: str
) -> ConfigOut:
    row = await _write(pool, store, kind, name, content, queries.INSERT_NEW)
    if row is None:
        raise Conflict(f"{kind} {name!r} already exists (use PUT to replace it)")
    return _config_out(row)


async def put_config(
    pool: Pool, store: ConfigStore, kind: str, name: str, content: str
) -> ConfigOut:
    row = await _write(pool, store, kind, name, content, queries.UPSERT)
    assert row is not None  # an upsert always returns its row
    return _config_out(row)


async def delete_config(pool: Pool, store: ConfigStore, kind: str, name: str) -> None:
    check_kind(kind)
    check_name(name)
    if (kind, name) in PROTECTED:
        raise Conflict(f"the {name!r} {kind} cannot be deleted")
    async with transaction(pool) as connection:
        await connection.execute(queries.LOCK_WRITES)
        users = await _profiles_using(connection, kind, name)
        if users:
            raise Conflict(f"{kind} {name!r} is used by profile(s): {', '.join(users)}")
        if await connection.fetchval(queries.DELETE, kind, name) is None:
            raise NotFound(f"{kind} {name!r} not found")
        await connection.execute(queries.NOTIFY_CHANGED, kind, name)
    await store.reload(kind, name)


async def _write(
    pool: Pool, store: ConfigStore, kind: str, name: str, content: str, statement: str
) -> Any:
    content = converted(kind, name, content)
    config = parse_config(kind, name, content)
    async with transaction(pool) as connection:
        await connection.execute(queries.LOCK_WRITES)
        if isinstance(config, Profile):
            await _check_references(connection, config)
        row = await connection.fetchrow(statement, kind, name, content)
        if row is not None:
            await connection.execute(queries.NOTIFY_CHANGED, kind, name)
    if row is not None:
        await store.reload(kind, name)
    return row


# --- references between configs -----------------------------------------------------------


async def _check_references(connection: Any, profile: Profile) -> None:
    """A profile may only name templates and an engine that exist, and its prompt
    template may only use the variables the profile declares."""
    rows = await connection.fetch(queries.SELECT_EXISTING, "template", profile.template_names())
    templates = {row["name"]: row["content"] for row in rows}
    for key in ("prompt_template", "claude_md_template"):
        wanted = getattr(profile, key)
        if wanted is not None and wanted not in templates:
            raise Invalid(
                f"profile {profile.name!r}: {key} {wanted!r} does not exist", field="content"
            )
    if profile.prompt_template is not None and profile.compat is None:
        _check_template_vars(profile, templates[profile.prompt_template])
    engine = profile.engine
    if engine and not await connection.fetch(queries.SELECT_EXISTING, "engine", [engine]):
        raise Invalid(
            f"profile {profile.name!r}: engine {engine!r} does not exist", field="content"
        )


def _check_template_vars(profile: Profile, source: str) -> None:
    unknown = sorted(undeclared_names(source) - TEMPLATE_CONTEXT - set(profile.vars))
    if unknown:
        raise Invalid(
            f"profile {profile.name!r}: template {profile.prompt_template!r} uses "
            f"undeclared variable(s) {', '.join(unknown)}; declare them under [vars]",
            field="content",
        )


async def _profiles_using(connection: Any, kind: str, name: str) -> list[str]:
    if kind == "profile":
        return []
    users = []
    for row in await connection.fetch(queries.SELECT_KIND, "profile"):
        try:
            profile = parse_profile(row["name"], row["content"])
        except TowerError:
            continue  # an unparseable profile references nothing we can honour
        uses = profile.template_names() if kind == "template" else [profile.engine]
        if name in uses:
            users.append(profile.name)
    return users
