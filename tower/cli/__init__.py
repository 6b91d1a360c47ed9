"""`parpaing`: serve | migrate | doctor, and the client commands (see tower.cli.client).

With no DATABASE_URL, serve/migrate/doctor use the embedded PostgreSQL whose data lives
under the state directory (STATE_DIR, else the XDG state dir), so one command is enough.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Literal

import asyncpg
from alembic.script import ScriptDirectory

from tower.app import create_app
from tower.cli.client import add_commands as add_client_commands
from tower.cli.output import CliError
from tower.db.embedded import LocalPostgres
from tower.db.migrate import alembic_config, migrate
from tower.db.pool import create_pool
from tower.errors import TowerError
from tower.execution.docker import probe
from tower.observability import queries
from tower.server import run_server
from tower.settings import Settings, gateway_container, state_dir
from tower.webhooks.secret import webhook_secret
from tower.webhooks.signing import standard_form

PROBE_TIMEOUT = 5.0


class Stopped(BaseException):
    """SIGTERM: unwinds like Ctrl-C so every `finally` (embedded server stop) runs."""


# --- the database a command works on ---------------------------------------------------


def postgres_dir(settings: Settings) -> Path:
    return state_dir(settings) / "postgres"


@contextmanager
def database(settings: Settings, *, owner: bool) -> Iterator[str]:
    """The database URL to use. Embedded: started if needed; stopped at the end when
    `owner` (serve) or when this command is the one that started it (migrate, doctor)."""
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
        yield server.url
    finally:
        if owner or not was_running:
            server.stop()


def _embedded_running(datadir: Path) -> bool:
    pidfile = datadir / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def redacted(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# --- serve, migrate ----------------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    settings = Settings()
    host = args.host or settings.tower_host
    port = args.port or settings.tower_port
    try:
        with _sigterm_unwinds(), database(settings, owner=True) as url:
            _say_where(settings, url)
            _require_reachable(url)
            _ensure_images(settings)
            _show_gateway_progress()
            _say(f"serving on http://{host}:{port}")
            app = create_app(settings.model_copy(update={"database_url": url}))
            run_server(app, host, port)
    except (KeyboardInterrupt, Stopped):
        pass
    _say("stopped")
    return 0


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal with our
    # handler back in place: it raises Stopped, and the embedded server is stopped.
    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise Stopped

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _ensure_images(settings: Settings) -> None:
    """All-in-one: build the worker image on first start, and the gateway image when it is
    missing or its sources changed (seconds), showing the builds as they go."""
    if settings.tower_runner != "docker":
        return
    if not probe.ping(PROBE_TIMEOUT).ok:
        _say("Docker is unreachable: jobs will fail until it answers (see `parpaing doctor`)")
        return
    from tower.images import build as images  # the build code loads only when needed

    which = []
    if not probe.image_present(settings.worker_image, PROBE_TIMEOUT).ok:
        _say(f"worker image {settings.worker_image} is missing: building it (a few minutes, once)")
        which.append("worker")
    if settings.gateway_managed and not images.image_is_current(
        settings.gateway_image, images.GATEWAY_CONTEXT
    ):
        _say(f"gateway image {settings.gateway_image} is missing or outdated: building it")
        which.append("gateway")
    if not which:
        return
    try:
        images.build_images(settings, ca_bundle=images.default_ca_bundle(), which=which)
    except TowerError as exc:
        raise CliError(f"could not build the {' and '.join(which)} image: {exc.message}") from None


def _show_gateway_progress() -> None:
    """The tower starts (or replaces) the gateway container as it starts: say so here."""
    logger = logging.getLogger("tower.gateway.container")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("parpaing: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # said here once, not again by tower's own log handler


def _require_reachable(url: str) -> None:
    # Fail with one line now, rather than with a traceback from the app's start-up.
    try:
        asyncio.run(current_revision(url))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise CliError(f"cannot connect to database {redacted(url)}: {exc}") from None


def _say_where(settings: Settings, url: str) -> None:
    if settings.database_url:
        _say(f"database {redacted(url)}")
    else:
        _say(f"database {url} (embedded; data in {postgres_dir(settings)})")


def _say(message: str) -> None:
    print(f"parpaing: {message}", flush=True)


def migrate_command(_args: argparse.Namespace) -> int:
    settings = Settings()
    with database(settings, owner=False) as url:
        try:
            asyncio.run(migrate(url))
            revision = asyncio.run(current_revision(url))
        except (OSError, asyncpg.PostgresError) as exc:
            raise CliError(f"migration of {redacted(url)} failed: {exc}") from None
    _say(f"database {redacted(url)} is at revision {revision}")
    return 0


async def current_revision(url: str) -> str | None:
    connection = await asyncpg.connect(url, timeout=PROBE_TIMEOUT)
    try:
        revision: str | None = await connection.fetchval(queries.CURRENT_REVISION)
    except asyncpg.UndefinedTableError:
        revision = None
    finally:
        await connection.close()
    return revision


def head_revision() -> str | None:
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
    await migrate(url)
    pool = await create_pool(url, 2)
    try:
        return await webhook_secret(settings.webhook_secret.get_secret_value(), pool)
    finally:
        await pool.close()


# --- doctor ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    name: str
    outcome: Literal["ok", "FAIL", "skip"]
    detail: str
    fix: str = ""


def doctor(_args: argparse.Namespace) -> int:
    settings = Settings()
    findings = [_database_finding(settings)]
    docker = _docker_finding()
    findings += [docker, _image_finding(settings, docker), _gateway_finding(settings)]
    for finding in findings:
        _print_finding(finding)
    return 1 if any(finding.outcome == "FAIL" for finding in findings) else 0


def _print_finding(finding: Finding) -> None:
    print(f"[{finding.outcome:^4}] {finding.name:<13} {finding.detail}")
    if finding.fix:
        print(f"{'':7}fix: {finding.fix}")


def _database_finding(settings: Settings) -> Finding:
    try:
        with database(settings, owner=False) as url:
            return _schema_finding(url)
    except CliError as exc:
        fix = f"read {postgres_dir(settings) / 'server.log'}, or set DATABASE_URL"
        return Finding("database", "FAIL", str(exc), fix)


def _schema_finding(url: str) -> Finding:
    where = redacted(url)
    try:
        revision = asyncio.run(current_revision(url))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        fix = "start PostgreSQL or correct DATABASE_URL (unset it to use the embedded server)"
        return Finding("database", "FAIL", f"cannot connect to {where}: {exc}", fix)
    head = head_revision()
    if revision != head:
        detail = f"{where} is at revision {revision or 'none'}, code expects {head}"
        return Finding("database", "FAIL", detail, "run `parpaing migrate`")
    return Finding("database", "ok", f"{where}, revision {revision} (latest)")


def _docker_finding() -> Finding:
    result = probe.ping(PROBE_TIMEOUT)
    if result.ok:
        return Finding("docker", "ok", f"daemon answers ({result.detail})")
    fix = "start dockerd (e.g. `sudo systemctl start docker`) or point DOCKER_HOST at a daemon"
    return Finding("docker", "FAIL", f"daemon unreachable: {result.detail}", fix)


def _image_finding(settings: Settings, docker: Finding) -> Finding:
    image = settings.worker_image
    if docker.outcome != "ok":
        return Finding("worker image", "skip", f"{image}: not checked, Docker is unreachable")
    result = probe.image_present(image, PROBE_TIMEOUT)
    if result.ok:
        return Finding("worker image", "ok", f"{image} ({result.detail})")
    fix = "run `parpaing images build`, or set WORKER_IMAGE to an image you built"
    return Finding("worker image", "FAIL", result.detail, fix)


def _gateway_finding(settings: Settings) -> Finding:
    from tower.gateway.container import probe_gateway

    result = probe_gateway(settings, PROBE_TIMEOUT)
    if result.ok:
        return Finding("gateway", "ok", result.detail)
    if settings.gateway_managed:
        fix = (
            "start `parpaing serve` (it builds and starts the gateway); if it is running, "
            f"read `docker logs {gateway_container(settings)}` (a bad key or upstream stops it); "
            "for a gateway of your own, set GATEWAY_URL and GATEWAY_MANAGED=false"
        )
    else:
        fix = "start the gateway (compose: `docker compose up -d gateway`) or set GATEWAY_URL"
    return Finding("gateway", "FAIL", result.detail, fix)


def images_command(args: argparse.Namespace) -> int:
    from tower.images import build as images  # the Docker SDK loads only when asked for

    return images.main(args.images_args or ["--help"])


# --- entry point -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parpaing", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="run a tower (embedded PostgreSQL by default)")
    serving.add_argument("--host")
    serving.add_argument("--port", type=int)
    serving.set_defaults(handler=serve)
    commands.add_parser("migrate", help="apply database migrations").set_defaults(
        handler=migrate_command
    )
    commands.add_parser("doctor", help="check this host can run tower").set_defaults(handler=doctor)
    commands.add_parser(
        "webhook-secret", help="print the webhook signing secret (whsec_...) for receivers"
    ).set_defaults(handler=webhook_secret_command)
    imaging = commands.add_parser("images", help="build the worker image (`images build --help`)")
    imaging.add_argument("images_args", nargs=argparse.REMAINDER)
    imaging.set_defaults(handler=images_command)
    add_client_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CliError as exc:
        print(f"parpaing: {exc}", file=sys.stderr)
        return 1
