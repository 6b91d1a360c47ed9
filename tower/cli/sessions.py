"""`parpaing continue JOB --prompt ...`: the next turn of a finished job, in its workspace
and conversation (POST /jobs/{id}/continue, docs/sessions.md); `parpaing session ID`:
its turns."""

from __future__ import annotations

import argparse
from typing import Any

from tower.cli.client import (
    _prompt,
    _report,
    against_tower,
    parse_var,
    quoted,
    tower_options,
    wait_for,
)
from tower.cli.tower_client import TowerClient


def add_commands(commands: Any) -> None:
    common = tower_options()
    parser = commands.add_parser(
        "continue",
        parents=[common],
        help="continue a finished job: its next turn, in its workspace and conversation",
    )
    parser.add_argument("job_id")
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt")
    prompt.add_argument("--prompt-file", help="read the prompt from a file ('-': stdin)")
    parser.add_argument("--var", action="append", help="NAME=VALUE or NAME:=JSON (repeatable)")
    parser.add_argument("--model")
    parser.add_argument("--max-turns", type=int)
    parser.add_argument("--max-budget-usd", type=float)
    parser.add_argument("--webhook-url")
    parser.add_argument("--wait", action="store_true", help="wait and print the finished job")
    parser.set_defaults(handler=against_tower(continue_job))
    parser = commands.add_parser("session", parents=[common], help="list a session's turns")
    parser.add_argument("session_id")
    parser.set_defaults(handler=against_tower(session))


def continue_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": _prompt(args)}
    if args.var:
        body["prompt_vars"] = dict(parse_var(item) for item in args.var)
    options = {
        "model": args.model,
        "max_turns": args.max_turns,
        "max_budget_usd": args.max_budget_usd,
        "webhook_url": args.webhook_url,
    }
    return body | {name: value for name, value in options.items() if value is not None}


def continue_job(args: argparse.Namespace, client: TowerClient) -> int:
    reply = client.call("POST", f"/jobs/{quoted(args.job_id)}/continue", continue_body(args))
    job_id = str(reply["job_id"])
    print(job_id)
    if not args.wait:
        return 0
    return _report(wait_for(client, job_id, None))


def session(args: argparse.Namespace, client: TowerClient) -> int:
    reply = client.call("GET", f"/sessions/{quoted(args.session_id)}")
    for turn in reply["turns"]:
        parent = turn["parent_job_id"] or "-"
        print(f"{turn['turn']:>4}  {turn['job_id']:<80} {turn['status']:<10} from {parent}")
    return 0
