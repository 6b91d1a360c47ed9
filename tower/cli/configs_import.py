"""`parpaing configs import DIR`: the profiles, engines and templates of a Parpaing
directory (profiles/, engines/, templates/, hooks/), converted and written with PUT."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tower.cli.client import against_tower, tower_options
from tower.cli.output import CliError
from tower.cli.tower_client import TowerClient


def add_commands(commands: Any) -> None:
    configs = commands.add_parser("configs", help="manage profiles, engines and templates")
    actions = configs.add_subparsers(dest="configs_command", required=True)
    parser = actions.add_parser(
        "import", parents=[tower_options()], help="import a Parpaing directory's configs"
    )
    parser.add_argument("directory", type=Path)
    parser.set_defaults(handler=against_tower(import_directory))


def import_directory(args: argparse.Namespace, client: TowerClient) -> int:
    # Loaded here: the converter is not needed for the other commands (fast --help).
    from tower.configs.legacy_dir import configs_in
    from tower.errors import TowerError

    if not args.directory.is_dir():
        raise CliError(f"{args.directory} is not a directory")
    try:
        configs = configs_in(args.directory)
    except TowerError as error:
        raise CliError(error.message) from None
    for kind, name, content in configs:
        client.call("PUT", f"/configs/{kind}/{name}", {"content": content})
        print(f"{kind} {name}")
    return 0
