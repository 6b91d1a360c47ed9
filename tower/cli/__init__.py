"""`parpaing`: serve | migrate | doctor, and the client commands (see tower.cli.client).

With no DATABASE_URL, serve/migrate/doctor use the embedded PostgreSQL whose data lives
under the state directory (STATE_DIR, else the XDG state dir), so one command is enough.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from tower.cli import (
    artifacts,
    client,
    configs_import,
    credentials,
    images,
    keys,
    server_commands,
    sessions,
    uploads,
)
from tower.cli.output import CliError, report_failure

# In the order `parpaing --help` lists the commands: the server's first, then the client's.
# Every module imported here stays light (tower/cli/lazy.py): the server's code loads only
# when a server command runs.
REGISTER_COMMANDS: tuple[Callable[[Any], None], ...] = (
    server_commands.add_serve,
    server_commands.add_migrate,
    server_commands.add_doctor,
    server_commands.add_webhook_secret,
    images.add_commands,
    client.add_commands,
    sessions.add_commands,
    credentials.add_commands,
    keys.add_commands,
    uploads.add_commands,
    artifacts.add_commands,
    configs_import.add_commands,
)


def build_parser() -> argparse.ArgumentParser:
    # The description is this module's docstring: `parpaing --help` shows it.
    parser = argparse.ArgumentParser(prog="parpaing", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for register in REGISTER_COMMANDS:
        register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Every command sets `handler`: it returns the exit code, or raises CliError.
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CliError as exc:
        return report_failure(exc)
