"""`parpaing migrate` and `parpaing webhook-secret` (registered in server_commands.py),
and the schema revision helpers that serve and doctor use too."""

from __future__ import annotations

import argparse
import asyncio

import asyncpg
from alembic.script import ScriptDirectory

from tower.cli.database import PROBE_TIMEOUT, database, redacted
from tower.cli.output import CliError, say
from tower.db.migrate import alembic_config, migrate
from tower.db.pool import create_pool
from tower.observability import queries
from tower.settings import Settings
from tower.webhooks.secret import webhook_secret
from tower.webhooks.signing import standard_form

# --- migrate -----------------------------------------------------------------------------


def migrate_command(_args: argparse.Namespace) -> int:
    settings = Settings()
    with database(settings, owner=False) as url:
        try:
            asyncio.run(migrate(url))
            revision = asyncio.run(current_revision(url))
        except (OSError, asyncpg.PostgresError) as exc:
            raise CliError(f"migration of {redacted(url)} failed: {exc}") from None
    say(f"database {redacted(url)} is at revision {revision}")
    return 0


async def current_revision(url: str) -> str | None:
    """The schema revision the database is at; None before the first migration."""
    connection = await asyncpg.connect(url, timeout=PROBE_TIMEOUT)
    try:
        revision: str | None = await connection.fetchval(queries.CURRENT_REVISION)
    except asyncpg.UndefinedTableError:
        revision = None
    finally:
        await connection.close()
    return revision


def head_revision() -> str | None:
    """The schema revision this code expects: the newest migration."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


# --- webhook-secret ----------------------------------------------------------------------


def webhook_secret_command(_args: argparse.Namespace) -> int:
    """Print the signing secret in its Standard Webhooks form, for webhook receivers."""
    settings = Settings()
    with database(settings, owner=False) as url:
        try:
            secret = asyncio.run(_webhook_secret(settings, url))
        except (OSError, asyncpg.PostgresError) as exc:
            raise CliError(
                f"reading the webhook secret from {redacted(url)} failed: {exc}"
            ) from None
        except ValueError as exc:
            raise CliError(str(exc)) from None
    print(standard_form(secret))
    return 0


async def _webhook_secret(settings: Settings, url: str) -> str:
    # Migrated first: the generated secret is kept in a table the schema must have.
    await migrate(url)
    pool = await create_pool(url, 2)
    try:
        return await webhook_secret(settings.webhook_secret.get_secret_value(), pool)
    finally:
        await pool.close()
