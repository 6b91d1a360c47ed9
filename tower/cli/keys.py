"""`parpaing keys create|list|revoke` and `parpaing tenants set|show`: API keys and
tenants' quotas (admin keys; docs/tenants.md). A new key is printed once, alone on
stdout's first line, so a script can capture it; tower keeps only its hash."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tower.cli.client import against_tower, quoted, tower_options
from tower.cli.output import CliError
from tower.cli.tower_client import TowerClient

ROLES = ("admin", "operator", "submit", "read")
# PUT /tenants/{name}'s fields, as options; "default" puts null (the deployment's default).
QUOTAS: dict[str, type] = {
    "max_running": int,
    "submits_per_minute": int,
    "spend_per_day_usd": float,
    "spend_per_month_usd": float,
    "max_queued": int,
    "share": float,
}


def add_commands(commands: Any) -> None:
    common = tower_options()
    _add_keys(commands, common)
    _add_tenants(commands, common)


def _add_keys(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("keys", help="make, list and revoke API keys (admin)")
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser(
        "create", parents=[common], help="make a key; it is printed this once"
    )
    create.add_argument("--tenant", required=True)
    create.add_argument("--role", choices=ROLES, required=True)
    create.add_argument("--name", required=True, help="who holds it; recorded on its jobs")
    create.set_defaults(handler=against_tower(create_key))
    listing = actions.add_parser("list", parents=[common], help="keys, never secrets")
    listing.add_argument("--tenant")
    listing.set_defaults(handler=against_tower(list_keys))
    revoke = actions.add_parser("revoke", parents=[common], help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=against_tower(revoke_key))


def _add_tenants(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("tenants", help="set and show tenants' quotas")
    actions = parser.add_subparsers(dest="action", required=True)
    setting = actions.add_parser(
        "set",
        parents=[common],
        help="set a tenant's quotas (0: no limit; 'default': the deployment's)",
    )
    setting.add_argument("name")
    for field in QUOTAS:
        setting.add_argument(f"--{field.replace('_', '-')}", dest=field, metavar="N")
    setting.set_defaults(handler=against_tower(set_tenant))
    show = actions.add_parser("show", parents=[common], help="a tenant's quotas and use")
    show.add_argument("name", nargs="?", help="default: every tenant the key sees")
    show.set_defaults(handler=against_tower(show_tenant))


def create_key(args: argparse.Namespace, client: TowerClient) -> int:
    body = {"tenant": args.tenant, "role": args.role, "name": args.name}
    made = client.call("POST", "/keys", body)
    print(made["key"])
    print(
        f"id {made['id']}, tenant {made['tenant']}, role {made['role']}: store the key now,"
        " it is not shown again",
        file=sys.stderr,
    )
    return 0


def list_keys(args: argparse.Namespace, client: TowerClient) -> int:
    path = "/keys" + (f"?tenant={quoted(args.tenant)}" if args.tenant else "")
    for key in client.call("GET", path)["keys"]:
        print(
            f"{key['id']:<21} {key['tenant']:<24} {key['role']:<8} {key['name']:<24} "
            f"{key['hint']:<10} {key['created_at']}"
        )
    return 0


def revoke_key(args: argparse.Namespace, client: TowerClient) -> int:
    client.call("DELETE", f"/keys/{quoted(args.key_id)}")
    print(f"{args.key_id} revoked")
    return 0


def set_tenant(args: argparse.Namespace, client: TowerClient) -> int:
    """PUT sets every quota: the ones not given keep their current value."""
    path = f"/tenants/{quoted(args.name)}"
    current = _current_quotas(client, path)
    for field, kind in QUOTAS.items():
        given = getattr(args, field)
        if given is not None:
            current[field] = None if given == "default" else _number(field, given, kind)
    print(json.dumps(client.call("PUT", path, current), indent=2))
    return 0


def _current_quotas(client: TowerClient, path: str) -> dict[str, Any]:
    try:
        quotas: dict[str, Any] = client.call("GET", path)["quotas"]
    except CliError as exc:
        if exc.status != 404:
            raise
        return {}
    return quotas


def _number(field: str, text: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        option = field.replace("_", "-")
        raise CliError(f"--{option} takes a number, or 'default'") from None


def show_tenant(args: argparse.Namespace, client: TowerClient) -> int:
    if args.name:
        print(json.dumps(client.call("GET", f"/tenants/{quoted(args.name)}"), indent=2))
    else:
        print(json.dumps(client.call("GET", "/tenants"), indent=2))
    return 0
