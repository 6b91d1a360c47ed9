"""`parpaing upload PATH`: a file, an archive (.tar, .tar.gz/.tgz, .zip) or a directory
(sent as a tar.gz) to POST /uploads, for a job's `inputs`. Streamed from disk."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tower.cli.client import against_tower, tower_options
from tower.cli.files import upload_path
from tower.cli.tower_client import TowerClient


def add_commands(commands: Any) -> None:
    parser = commands.add_parser(
        "upload", parents=[tower_options()], help="upload a file, an archive or a directory"
    )
    parser.add_argument("path", type=Path)
    parser.set_defaults(handler=against_tower(upload))


def upload(args: argparse.Namespace, client: TowerClient) -> int:
    reply = upload_path(client, args.path)
    print(reply["upload_id"])
    return 0
