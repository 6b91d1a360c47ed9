"""`parpaing images build ...`: hands its arguments to the image builder, tower.images.build,
which has its own parser (`parpaing images build --help`)."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(commands: Any) -> None:
    """Register `images` on `commands` (an argparse subparsers object)."""
    imaging = commands.add_parser("images", help="build the worker image (`images build --help`)")
    imaging.add_argument("images_args", nargs=argparse.REMAINDER)
    imaging.set_defaults(handler=images_command)


def images_command(args: argparse.Namespace) -> int:
    from tower.images import build as images  # the Docker SDK loads only when asked for

    return images.main(args.images_args or ["--help"])
