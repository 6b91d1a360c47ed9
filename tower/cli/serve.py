"""`parpaing serve`: the all-in-one start. Starts the embedded PostgreSQL (unless
DATABASE_URL is set), builds missing images, runs the tower until Ctrl-C or SIGTERM, then
stops the embedded PostgreSQL again."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import asyncpg

from tower.app import create_app
from tower.cli.admin import current_revision
from tower.cli.database import (
    PROBE_TIMEOUT,
    database,
    postgres_dir,
    redacted,
    without_password,
)
from tower.cli.output import PREFIX, CliError, say
from tower.errors import TowerError
from tower.execution.docker import probe
from tower.server import run_server
from tower.settings import Settings, egress_managed
from tower.web.hosts import is_loopback


class Stopped(BaseException):
    """SIGTERM: unwinds like Ctrl-C so every `finally` (embedded server stop) runs."""


def serve(args: argparse.Namespace) -> int:
    settings = Settings()
    if args.insecure_no_auth:
        settings = settings.model_copy(update={"insecure_no_auth": True})
    host = args.host or settings.tower_host
    port = args.port or settings.tower_port
    _require_key_off_loopback(settings, host)
    try:
        with _sigterm_unwinds(), database(settings, owner=True, watch=True) as url:
            _say_where(settings, url)
            _require_reachable(url)
            _ensure_images(settings)
            _show_gateway_progress()
            say(f"serving on http://{host}:{port}")
            app = create_app(settings.model_copy(update={"database_url": url}))
            run_server(app, host, port)
    except (KeyboardInterrupt, Stopped):
        pass
    say("stopped")
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


def _require_key_off_loopback(settings: Settings, host: str) -> None:
    """A keyless tower is anyone's who reaches it (run jobs, read every result, change
    configs): off loopback, only when the operator says so."""
    if settings.tower_api_key.get_secret_value() or is_loopback(host):
        return
    if not settings.insecure_no_auth:
        raise CliError(
            f"refusing to serve on {host} without an API key: anyone who reaches it could "
            "run jobs and read their results. Set TOWER_API_KEY, or serve on 127.0.0.1 "
            "(--host, TOWER_HOST); to serve it open anyway, pass --insecure-no-auth or set "
            "INSECURE_NO_AUTH=true"
        )
    warning = (
        f"WARNING: serving on {host} WITHOUT AN API KEY (insecure-no-auth): anyone who "
        "reaches this port can run jobs, read their results and change configs"
    )
    if not settings.allowed_hosts:
        warning += "; Host headers but localhost, 127.0.0.1 and [::1] need ALLOWED_HOSTS"
    print(PREFIX + warning, file=sys.stderr, flush=True)


def _say_where(settings: Settings, url: str) -> None:
    if settings.database_url:
        say(f"database {redacted(url)}")
    else:
        where = postgres_dir(settings)
        shown = without_password(url)
        say(f"database {shown} (embedded; data in {where}, password in {where}.password)")


def _require_reachable(url: str) -> None:
    # Fail with one line now, rather than with a traceback from the app's start-up.
    try:
        asyncio.run(current_revision(url))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise CliError(f"cannot connect to database {redacted(url)}: {exc}") from None


def _ensure_images(settings: Settings) -> None:
    """All-in-one: build the worker image on first start, and the gateway and egress proxy
    images when missing or their sources changed (seconds), showing the builds as they go."""
    if settings.tower_runner != "docker":
        return
    if not probe.ping(PROBE_TIMEOUT).ok:
        say("Docker is unreachable: jobs will fail until it answers (see `parpaing doctor`)")
        return
    from tower.images import build as images  # the build code loads only when needed

    which = _images_to_build(settings)
    if not which:
        return
    try:
        images.build_images(settings, ca_bundle=images.default_ca_bundle(), which=which)
    except TowerError as exc:
        raise CliError(f"could not build the {' and '.join(which)} image: {exc.message}") from None


def _images_to_build(settings: Settings) -> list[str]:
    """The images `_ensure_images` must build, each announced with the reason."""
    from tower.images import build as images  # the build code loads only when needed

    which = []
    if not probe.image_present(settings.worker_image, PROBE_TIMEOUT).ok:
        say(f"worker image {settings.worker_image} is missing: building it (a few minutes, once)")
        which.append("worker")
    elif images.image_is_outdated(
        settings.worker_image, images.WORKER_CONTEXT, images.WORKER_EXTRA_FILES
    ):
        # Built by an older version: it may not speak this tower's worker protocol.
        say(f"worker image {settings.worker_image} is outdated: rebuilding it")
        which.append("worker")
    if settings.gateway_managed and not images.image_is_current(
        settings.gateway_image, images.GATEWAY_CONTEXT
    ):
        say(f"gateway image {settings.gateway_image} is missing or outdated: building it")
        which.append("gateway")
    if egress_managed(settings) and not images.image_is_current(
        settings.egress_image, images.EGRESS_CONTEXT
    ):
        say(f"egress image {settings.egress_image} is missing or outdated: building it")
        which.append("egress")
    return which


def _show_gateway_progress() -> None:
    """The tower starts (or replaces) the gateway and egress proxy containers as it starts:
    say so here."""
    for name in ("tower.gateway.container", "tower.egress.container"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter(f"{PREFIX}%(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False  # said here once, not again by tower's own log handler
