"""`parpaing` command line. (Minimal: `serve` with DATABASE_URL; the rest is being built.)"""

from __future__ import annotations

import argparse

import uvicorn

from tower.app import create_app
from tower.settings import Settings


def serve(args: argparse.Namespace) -> int:
    settings = Settings()
    host = args.host or settings.tower_host
    port = args.port or settings.tower_port
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="parpaing")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run a tower")
    serve_parser.add_argument("--host")
    serve_parser.add_argument("--port", type=int)
    serve_parser.set_defaults(handler=serve)
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
