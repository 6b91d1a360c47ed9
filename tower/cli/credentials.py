"""`parpaing credentials add|list|delete|new-key`: named secrets for clones, pushes and
forge APIs. A secret is read from stdin (a prompt on a terminal), never from the command
line, where other users of the machine would see it in the process list."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from tower.cli.client import against_tower, quoted, tower_options
from tower.cli.output import CliError
from tower.cli.tower_client import TowerClient

KINDS = ("git", "github", "gitlab")
SECRET_MAX_BYTES = 16 * 1024


def add_commands(commands: Any) -> None:
    parser = commands.add_parser("credentials", help="store, list and delete named secrets")
    actions = parser.add_subparsers(dest="action", required=True)
    common = tower_options()
    _add_add(actions, common)
    listing = actions.add_parser("list", parents=[common], help="names and metadata")
    listing.set_defaults(handler=against_tower(list_credentials))
    deleting = actions.add_parser("delete", parents=[common], help="delete a credential")
    deleting.add_argument("name")
    deleting.set_defaults(handler=against_tower(delete_credential))
    key = actions.add_parser("new-key", help="print a fresh SECRETS_KEY")
    key.set_defaults(handler=print_new_key)


def _add_add(actions: Any, common: argparse.ArgumentParser) -> None:
    parser = actions.add_parser(
        "add", parents=[common], help="store a secret read from stdin (prompted on a terminal)"
    )
    parser.add_argument("name")
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--username", help="for HTTP basic auth (git)")
    parser.add_argument(
        "--api-url", help="the forge's API (github/gitlab; default: the public one)"
    )
    parser.set_defaults(handler=against_tower(add_credential))


def add_credential(args: argparse.Namespace, client: TowerClient) -> int:
    body = {"name": args.name, "kind": args.kind, "secret": read_secret()}
    body |= {k: v for k, v in (("username", args.username), ("api_url", args.api_url)) if v}
    reply = client.call("POST", "/credentials", body)
    print(f"{reply['name']} {reply['kind']} stored")
    return 0


def read_secret() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("secret: ")
    # One line: a token piped in from a file or a secret manager, without its newline.
    secret = sys.stdin.readline(SECRET_MAX_BYTES + 2).rstrip("\r\n")
    if not secret:
        raise CliError("no secret on stdin (pipe it in, or run on a terminal to be asked)")
    return secret


def list_credentials(args: argparse.Namespace, client: TowerClient) -> int:
    for entry in client.call("GET", "/credentials")["credentials"]:
        print(
            f"{entry['name']:<64} {entry['kind']:<7} {entry['username'] or '-':<20} "
            f"{entry['api_url'] or '-'}"
        )
    return 0


def delete_credential(args: argparse.Namespace, client: TowerClient) -> int:
    client.call("DELETE", f"/credentials/{quoted(args.name)}")
    print(f"{args.name} deleted")
    return 0


def print_new_key(args: argparse.Namespace) -> int:
    from tower.settings import new_secrets_key  # pydantic-settings: only for this command

    print(new_secrets_key())
    return 0
