"""Command handlers whose code loads only when their command runs.

`parpaing --help` and the client commands must start fast (under 0.3 s, `bench/cli.py`):
the server's code (FastAPI, SQLAlchemy, Alembic, asyncpg, the Docker SDK) takes over a
second to import. So every module `tower.cli` imports to build its parser is light, and a
command family with heavy code registers `deferred(...)` handlers that import it on use.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], int]


def deferred(module: str, function: str) -> Handler:
    """The handler main() calls: `module.function(args)`, `module` imported only then."""

    def handler(args: argparse.Namespace) -> int:
        command: Handler = getattr(importlib.import_module(module), function)
        return command(args)

    return handler
