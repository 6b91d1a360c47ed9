"""The client half of `parpaing`: submit, wait, jobs, cancel, logs against a running tower.

The tower is found with --url / TOWER_URL and authenticated with --api-key / TOWER_API_KEY.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tower.cli.files import upload_path
from tower.cli.output import CliError
from tower.cli.tower_client import TowerClient
from tower.db.statuses import JOB_STATUSES, TERMINAL_STATUSES

DEFAULT_URL = "http://127.0.0.1:8080"
# One /wait request never blocks longer than this; longer waits are several requests,
# so no proxy or server limit on request duration cuts a long wait short.
WAIT_CHUNK_SECONDS = 30
STREAM_RETRIES = 5
STREAM_RETRY_DELAY = 1.0
# What an agent's output may not send to a terminal: escape sequences (CSI, OSC, others)
# whole, then any other C0/C1 control character but newline and tab. A sequence split
# across two chunks loses its ESC here and prints as plain text, never as a command.
TERMINAL_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, screen clears
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"  # OSC: titles, links, clipboard
    r"|\x1b[@-Z\\-_]"  # other two-character escapes
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)

ClientCommand = Callable[[argparse.Namespace, TowerClient], int]


# --- argument parsing --------------------------------------------------------------------


def add_commands(commands: Any) -> None:
    """Register the client subcommands on `commands` (an argparse subparsers object)."""
    common = tower_options()
    _add_submit(commands, common)
    _add_wait(commands, common)
    _add_jobs(commands, common)
    for name, command, text in (
        ("cancel", cancel, "cancel a job"),
        ("logs", logs, "follow a job's output until it ends"),
    ):
        parser = commands.add_parser(name, parents=[common], help=text)
        parser.add_argument("job_id")
        parser.set_defaults(handler=against_tower(command))


def tower_options() -> argparse.ArgumentParser:
    """The options every client command takes: which tower, with which key."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("TOWER_URL", DEFAULT_URL))
    common.add_argument("--api-key", default=os.environ.get("TOWER_API_KEY", ""))
    return common


def _add_submit(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("submit", parents=[common], help="submit a job")
    parser.add_argument("--agent", required=True, help="agent id")
    parser.add_argument("--engine", help="default: the profile's engine")
    parser.add_argument("--profile")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt")
    prompt.add_argument("--prompt-file", help="read the prompt from a file ('-': stdin)")
    parser.add_argument("--var", action="append", help="NAME=VALUE or NAME:=JSON (repeatable)")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--wait", action="store_true", help="wait and print the finished job")
    _add_workspace_options(parser)
    parser.set_defaults(handler=against_tower(submit))


def _add_workspace_options(parser: argparse.ArgumentParser) -> None:
    workspace = parser.add_argument_group("workspace (docs: README, Inputs and Repositories)")
    workspace.add_argument(
        "--file",
        action="append",
        metavar="PATH[:DEST]",
        help="upload a file, archive or directory into /workspace[/DEST] (repeatable)",
    )
    workspace.add_argument(
        "--repo", metavar="URL[@REF]", help="clone this repository as /workspace"
    )
    workspace.add_argument("--credential", help="the stored credential for --repo")
    workspace.add_argument("--branch", help="push the agent's changes on this new branch")
    workspace.add_argument("--pr-title", help="and open a pull request with this title")
    workspace.add_argument("--pr-body", default="", help="the pull request's description")


def _add_wait(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("wait", parents=[common], help="wait for a job to finish")
    parser.add_argument("job_id")
    parser.add_argument("--timeout", type=_positive, help="seconds (default: forever)")
    parser.set_defaults(handler=against_tower(wait))


def _add_jobs(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("jobs", parents=[common], help="list jobs, newest first")
    parser.add_argument("--status", choices=JOB_STATUSES)
    parser.add_argument("--limit", type=int, default=50)
    parser.set_defaults(handler=against_tower(jobs))


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def against_tower(command: ClientCommand) -> Callable[[argparse.Namespace], int]:
    """The handler main() calls: `command` with a client for the tower --url names."""

    def handler(args: argparse.Namespace) -> int:
        return command(args, TowerClient(args.url, args.api_key))

    return handler


# --- commands ----------------------------------------------------------------------------


def submit(args: argparse.Namespace, client: TowerClient) -> int:
    body = submit_body(args)
    inputs = [_uploaded(client, item) for item in args.file or []]
    if inputs:
        body["inputs"] = inputs
    reply = client.call("POST", "/jobs", body)
    job_id = str(reply["job_id"])
    print(job_id)
    if not args.wait:
        return 0
    return _report(wait_for(client, job_id, None))


def wait(args: argparse.Namespace, client: TowerClient) -> int:
    return _report(wait_for(client, args.job_id, args.timeout))


def jobs(args: argparse.Namespace, client: TowerClient) -> int:
    query = {"limit": args.limit, **({"status": args.status} if args.status else {})}
    reply = client.call("GET", "/jobs?" + urllib.parse.urlencode(query))
    for job in reply["jobs"]:
        print(f"{job['job_id']:<80} {job['status']:<10} {job['engine']:<12} {job['created_at']}")
    # The count goes to stderr so stdout stays one job per line, for scripts.
    print(f"{len(reply['jobs'])} of {reply['total']} jobs", file=sys.stderr)
    return 0


def cancel(args: argparse.Namespace, client: TowerClient) -> int:
    reply = client.call("DELETE", f"/jobs/{quoted(args.job_id)}")
    print(f"{reply['job_id']} {reply['status']}")
    return 0


def logs(args: argparse.Namespace, client: TowerClient) -> int:
    """Follow the job's output as it runs (its event stream), until it ends."""
    path = f"/jobs/{quoted(args.job_id)}"
    status, printed = follow_log(client, f"{path}/events")
    if status != "completed" or not printed:
        job = client.call("GET", path)
        status = job["status"]
        if not printed and job.get("result"):
            print(job["result"])  # a job that ran before job logs were kept
        if status != "completed" and job.get("error"):
            print(job["error"], file=sys.stderr)
    return 0 if status == "completed" else 1


# --- following a job ---------------------------------------------------------------------


def follow_log(client: TowerClient, path: str) -> tuple[str | None, bool]:
    """Copy log events to stdout/stderr until the terminal state event, reconnecting
    with Last-Event-ID when the connection drops. Returns (last status, any output)."""
    last_id, status, printed, failures = "", None, False, 0
    while status not in TERMINAL_STATUSES:
        try:
            for event_id, name, data in client.events(path, last_id):
                last_id, failures = event_id, 0
                if name == "log":
                    _copy_log(data)
                    printed = True
                elif name == "state":
                    status = data["status"]
            if status not in TERMINAL_STATUSES:
                return status, printed  # the job was deleted while we followed it
        except (OSError, ValueError, http.client.HTTPException) as exc:
            failures += 1
            if failures > STREAM_RETRIES:
                raise CliError(f"lost the event stream at {client.base_url}: {exc}") from None
            time.sleep(STREAM_RETRY_DELAY)
    return status, printed


def _copy_log(data: dict[str, str]) -> None:
    # Each chunk to the stream the job wrote it on, at once: the user is watching.
    out = sys.stdout if data["stream"] == "stdout" else sys.stderr
    out.write(for_terminal(data["text"]) if _is_terminal(out) else data["text"])
    out.flush()


def for_terminal(text: str) -> str:
    """`text` without what a terminal would act on rather than show (newlines and tabs stay)."""
    return TERMINAL_ESCAPES.sub("", text)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def wait_for(client: TowerClient, job_id: str, timeout: float | None) -> dict[str, Any]:
    """Block until the job is terminal; None waits forever. Raises CliError on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = WAIT_CHUNK_SECONDS if deadline is None else deadline - time.monotonic()
        chunk = max(1, min(WAIT_CHUNK_SECONDS, int(remaining)))
        try:
            job: dict[str, Any] = client.call(
                "GET", f"/jobs/{quoted(job_id)}/wait?timeout={chunk}", timeout=chunk + 15
            )
            return job
        except CliError as exc:
            # 408: this chunk ended with the job still running; ask again until the deadline.
            if exc.status != 408 or (deadline is not None and time.monotonic() >= deadline):
                raise CliError(f"job {job_id}: {exc}", exc.status) from None


def _report(job: dict[str, Any]) -> int:
    print(json.dumps(job, indent=2, sort_keys=True))
    return 0 if job.get("status") == "completed" else 1


def quoted(job_id: str) -> str:
    return urllib.parse.quote(job_id, safe="")


# --- the job to submit -------------------------------------------------------------------


def submit_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"agent_id": args.agent, "prompt": _prompt(args)}
    if args.engine:
        body["engine"] = args.engine  # else tower runs the profile's
    if args.profile:
        body["profile"] = args.profile
    if args.var:
        body["prompt_vars"] = dict(parse_var(item) for item in args.var)
    if args.dry_run:
        body["dry_run"] = True
    body.update(_repository(args))
    return body


def _repository(args: argparse.Namespace) -> dict[str, Any]:
    """`repo` and `output` from --repo URL[@REF], --credential, --branch, --pr-title."""
    if not args.repo:
        if args.credential or args.branch or args.pr_title:
            raise CliError("--credential, --branch and --pr-title need --repo")
        return {}
    url, ref = _url_and_ref(args.repo)
    repo: dict[str, Any] = {"url": url, **({"ref": ref} if ref else {})}
    if args.credential:
        repo["credential"] = args.credential
    fields: dict[str, Any] = {"repo": repo}
    if args.pr_title and not args.branch:
        raise CliError("--pr-title needs --branch (the pull request's branch)")
    if args.branch:
        output: dict[str, Any] = {"branch": args.branch}
        if args.pr_title:
            output["pull_request"] = {"title": args.pr_title, "body": args.pr_body}
        fields["output"] = output
    return fields


def _url_and_ref(text: str) -> tuple[str, str | None]:
    """https://host/o/r.git@feature/x -> (https://host/o/r.git, feature/x): the ref
    follows the last '@' after the host (a ref may hold '/', a host part may not hold '@')."""
    scheme, separator, rest = text.partition("://")
    host, slash, path = rest.partition("/")
    if "@" not in path:
        return text, None
    path, _, ref = path.rpartition("@")
    return f"{scheme}{separator}{host}{slash}{path}", ref or None


def _uploaded(client: TowerClient, item: str) -> dict[str, str]:
    """--file PATH[:DEST] uploaded; the job's input naming it."""
    local, _, destination = item.partition(":")
    reply = upload_path(client, Path(local))
    print(f"uploaded {local}: {reply['upload_id']} ({reply['size']} bytes)", file=sys.stderr)
    return {"upload": str(reply["upload_id"]), "path": destination}


def parse_var(item: str) -> tuple[str, Any]:
    """`k=v` is the string v; `k:=v` is v read as JSON (numbers, booleans, lists)."""
    if ":=" in item:
        name, _, raw = item.partition(":=")
        try:
            return _var_name(name, item), json.loads(raw)
        except ValueError:
            raise CliError(f"--var {item!r}: the value after := is not valid JSON") from None
    name, equals, value = item.partition("=")
    if not equals:
        raise CliError(f"--var {item!r}: expected NAME=VALUE or NAME:=JSON")
    return _var_name(name, item), value


def _var_name(name: str, item: str) -> str:
    if not name.strip():
        raise CliError(f"--var {item!r}: the variable name is empty")
    return name.strip()


def _prompt(args: argparse.Namespace) -> str:
    if args.prompt_file is None:
        return str(args.prompt or "")
    if args.prompt_file == "-":
        return sys.stdin.read()
    try:
        return Path(args.prompt_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"--prompt-file {args.prompt_file}: {exc}") from None
