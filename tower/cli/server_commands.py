"""The server side of `parpaing`, registered without importing it: serve, migrate, doctor
and webhook-secret run code from tower.cli.serve, .admin and .doctor (the whole server),
loaded only when one of them runs (tower/cli/lazy.py)."""

from __future__ import annotations

from typing import Any

from tower.cli.lazy import deferred


def add_serve(commands: Any) -> None:
    """Register `serve` on `commands` (an argparse subparsers object)."""
    serving = commands.add_parser("serve", help="run a tower (embedded PostgreSQL by default)")
    serving.add_argument("--host")
    serving.add_argument("--port", type=int)
    serving.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve without TOWER_API_KEY on a non-loopback address (anyone who reaches it "
        "can run jobs); same as INSECURE_NO_AUTH=true",
    )
    serving.set_defaults(handler=deferred("tower.cli.serve", "serve"))


def add_migrate(commands: Any) -> None:
    commands.add_parser("migrate", help="apply database migrations").set_defaults(
        handler=deferred("tower.cli.admin", "migrate_command")
    )


def add_doctor(commands: Any) -> None:
    commands.add_parser("doctor", help="check this host can run tower").set_defaults(
        handler=deferred("tower.cli.doctor", "doctor")
    )


def add_webhook_secret(commands: Any) -> None:
    commands.add_parser(
        "webhook-secret", help="print the webhook signing secret (whsec_...) for receivers"
    ).set_defaults(handler=deferred("tower.cli.admin", "webhook_secret_command"))
