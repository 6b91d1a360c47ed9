"""Apply Alembic migrations, one replica at a time (replicas often start together).

The migrations (Alembic's script directory, db/ in the repository) ship with the package:
tower.resources finds them. The configuration is built here, not read from alembic.ini,
which only serves the `alembic` command line in a checkout.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from tower import resources

# The repository, in a checkout: where alembic.ini is, for the `alembic` command line.
ROOT = resources.CHECKOUT
# Any fixed number works; it only has to be the same on every replica.
MIGRATION_LOCK = 727_001


def sqlalchemy_url(database_url: str) -> str:
    scheme, _, rest = database_url.partition("://")
    if scheme in ("postgres", "postgresql"):
        return f"postgresql+asyncpg://{rest}"
    return database_url


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.shipped("db")))
    config.set_main_option("path_separator", "os")
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def migrate(database_url: str, revision: str = "head") -> None:
    engine = create_async_engine(sqlalchemy_url(database_url))
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            await connection.commit()
            try:
                await connection.run_sync(_upgrade, revision)
                await connection.commit()
            finally:
                await connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK}
                )
                await connection.commit()
    finally:
        await engine.dispose()
