"""The database a server-side command works on: DATABASE_URL when set, else the embedded
PostgreSQL whose data lives under the state directory, so one command is enough."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tower.cli.output import CliError
from tower.db.embedded import LocalPostgres
from tower.db.embedded_watchdog import Watchdog
from tower.settings import Settings, state_dir

# How long a check waits for a service (the database, Docker, the gateway) to answer.
PROBE_TIMEOUT = 5.0


def postgres_dir(settings: Settings) -> Path:
    return state_dir(settings) / "postgres"


@contextmanager
def database(settings: Settings, *, owner: bool, watch: bool = False) -> Iterator[str]:
    """The database URL to use. Embedded: started if needed; stopped at the end when
    `owner` (serve) or when this command is the one that started it (migrate, doctor);
    with `watch` (serve), started again whenever it dies while in use."""
    if settings.database_url:
        yield settings.database_url
        return
    server = LocalPostgres(postgres_dir(settings))
    was_running = _embedded_running(server.datadir)
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        raise CliError(f"embedded PostgreSQL in {server.datadir} did not start: {exc}") from None
    try:
        with _watched(server, watch):
            yield server.url
    finally:
        if owner or not was_running:
            server.stop()


@contextmanager
def _watched(server: LocalPostgres, watch: bool) -> Iterator[None]:
    if not watch:
        yield
        return
    watchdog = Watchdog(server)
    try:
        with watchdog:
            yield
    finally:
        # Replaces the Stopped the watchdog's SIGTERM raised: this exit is a failure.
        if watchdog.gave_up:
            raise CliError(
                f"embedded PostgreSQL in {server.datadir} died and did not restart "
                f"after {watchdog.attempts} attempts"
            )


def _embedded_running(datadir: Path) -> bool:
    return LocalPostgres(datadir).postmaster_pid() is not None


def redacted(url: str) -> str:
    """The URL without its password, fit to print."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def without_password(url: str) -> str:
    """The embedded server's URL as printed: its password stays in its file."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.replace(f":{parts.password}@", "@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
