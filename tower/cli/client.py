"""The client half of `parpaing`: submit, wait, jobs, cancel, logs against a running tower.

Standard library only (urllib), so the commands work wherever tower is installed.
The tower is found with --url / TOWER_URL and authenticated with --api-key / TOWER_API_KEY.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"
# One /wait request never blocks longer than this; longer waits are several requests,
# so no proxy or server limit on request duration cuts a long wait short.
WAIT_CHUNK_SECONDS = 30
TERMINAL = ("completed", "failed", "cancelled")
# Longer than the server's keep-alive interval (15 s): a silent stream is a dead one.
STREAM_READ_TIMEOUT = 60.0
STREAM_RETRIES = 5
STREAM_RETRY_DELAY = 1.0


class CliError(Exception):
    """A failure to report on one line, then exit non-zero."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TowerClient:
    def __init__(self, base_url: str, api_key: str = "", timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def call(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None
    ) -> Any:
        request = urllib.request.Request(
            self.base_url + path, method=method, headers=self._headers(body is not None)
        )
        data = None if body is None else json.dumps(body).encode()
        try:
            with urllib.request.urlopen(request, data, timeout=timeout or self.timeout) as reply:
                return json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise CliError(_http_error_message(exc), exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(
                f"cannot reach tower at {self.base_url}: {reason} "
                "(is `parpaing serve` running? set TOWER_URL or --url)"
            ) from None

    def events(self, path: str, last_event_id: str = "") -> Iterator[tuple[str, str, Any]]:
        """(id, event, data) for each Server-Sent Event of `path`, until it closes."""
        headers = self._headers(False) | {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        request = urllib.request.Request(self.base_url + path, headers=headers)
        try:
            reply = urllib.request.urlopen(request, timeout=STREAM_READ_TIMEOUT)
        except urllib.error.HTTPError as exc:
            raise CliError(_http_error_message(exc), exc.code) from None
        except urllib.error.URLError as exc:
            raise CliError(f"cannot reach tower at {self.base_url}: {exc.reason}") from None
        with reply:
            fields: dict[str, str] = {}
            for raw in reply:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line and not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                elif not line and "data" in fields:
                    yield (
                        fields.get("id", ""),
                        fields.get("event", "message"),
                        json.loads(fields["data"]),
                    )
                    fields = {}

    def _headers(self, has_body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if has_body:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


def _http_error_message(exc: urllib.error.HTTPError) -> str:
    try:
        detail = json.loads(exc.read()).get("detail")
    except (ValueError, AttributeError):
        detail = None
    return f"HTTP {exc.code}: {_describe_detail(detail) or exc.reason}"


def _describe_detail(detail: Any) -> str:
    if isinstance(detail, list):
        return "; ".join(_describe_item(item) for item in detail)
    return str(detail or "")


def _describe_item(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
    return f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", ""))


# --- commands ----------------------------------------------------------------------------


def submit(args: argparse.Namespace, client: TowerClient) -> int:
    reply = client.call("POST", "/jobs", submit_body(args))
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
    print(f"{len(reply['jobs'])} of {reply['total']} jobs", file=sys.stderr)
    return 0


def cancel(args: argparse.Namespace, client: TowerClient) -> int:
    reply = client.call("DELETE", f"/jobs/{_quoted(args.job_id)}")
    print(f"{reply['job_id']} {reply['status']}")
    return 0


def logs(args: argparse.Namespace, client: TowerClient) -> int:
    """Follow the job's output as it runs (its event stream), until it ends."""
    path = f"/jobs/{_quoted(args.job_id)}"
    status, printed = follow_log(client, f"{path}/events")
    if status != "completed" or not printed:
        job = client.call("GET", path)
        status = job["status"]
        if not printed and job.get("result"):
            print(job["result"])  # a job that ran before job logs were kept
        if status != "completed" and job.get("error"):
            print(job["error"], file=sys.stderr)
    return 0 if status == "completed" else 1


def follow_log(client: TowerClient, path: str) -> tuple[str | None, bool]:
    """Copy log events to stdout/stderr until the terminal state event, reconnecting
    with Last-Event-ID when the connection drops. Returns (last status, any output)."""
    last_id, status, printed, failures = "", None, False, 0
    while status not in TERMINAL:
        try:
            for event_id, name, data in client.events(path, last_id):
                last_id, failures = event_id, 0
                if name == "log":
                    out = sys.stdout if data["stream"] == "stdout" else sys.stderr
                    out.write(data["text"])
                    out.flush()
                    printed = True
                elif name == "state":
                    status = data["status"]
            if status not in TERMINAL:
                return status, printed  # the job was deleted while we followed it
        except (OSError, ValueError, http.client.HTTPException) as exc:
            failures += 1
            if failures > STREAM_RETRIES:
                raise CliError(f"lost the event stream at {client.base_url}: {exc}") from None
            time.sleep(STREAM_RETRY_DELAY)
    return status, printed


def submit_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {
        "agent_id": args.agent,
        "engine": args.engine,
        "prompt": _prompt(args),
    }
    if args.profile:
        body["profile"] = args.profile
    if args.var:
        body["prompt_vars"] = dict(parse_var(item) for item in args.var)
    if args.dry_run:
        body["dry_run"] = True
    return body


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


def wait_for(client: TowerClient, job_id: str, timeout: float | None) -> dict[str, Any]:
    """Block until the job is terminal; None waits forever. Raises CliError on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = WAIT_CHUNK_SECONDS if deadline is None else deadline - time.monotonic()
        chunk = max(1, min(WAIT_CHUNK_SECONDS, int(remaining)))
        try:
            job: dict[str, Any] = client.call(
                "GET", f"/jobs/{_quoted(job_id)}/wait?timeout={chunk}", timeout=chunk + 15
            )
            return job
        except CliError as exc:
            if exc.status != 408 or (deadline is not None and time.monotonic() >= deadline):
                raise CliError(f"job {job_id}: {exc}", exc.status) from None


def _report(job: dict[str, Any]) -> int:
    print(json.dumps(job, indent=2, sort_keys=True))
    return 0 if job.get("status") == "completed" else 1


def _quoted(job_id: str) -> str:
    return urllib.parse.quote(job_id, safe="")


# --- argument parsing --------------------------------------------------------------------


def add_client_commands(commands: Any, environ: dict[str, str]) -> None:
    """Register the client subcommands on `commands` (an argparse subparsers object)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=environ.get("TOWER_URL", DEFAULT_URL))
    common.add_argument("--api-key", default=environ.get("TOWER_API_KEY", ""))
    _add_submit(commands, common)
    waiting = commands.add_parser("wait", parents=[common], help="wait for a job to finish")
    waiting.add_argument("job_id")
    waiting.add_argument("--timeout", type=_positive, help="seconds (default: forever)")
    waiting.set_defaults(client_handler=wait)
    listing = commands.add_parser("jobs", parents=[common], help="list jobs, newest first")
    listing.add_argument("--status", choices=("pending", "running", *TERMINAL))
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(client_handler=jobs)
    for name, handler, text in (
        ("cancel", cancel, "cancel a job"),
        ("logs", logs, "follow a job's output until it ends"),
    ):
        parser = commands.add_parser(name, parents=[common], help=text)
        parser.add_argument("job_id")
        parser.set_defaults(client_handler=handler)


def _add_submit(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("submit", parents=[common], help="submit a job")
    parser.add_argument("--agent", required=True, help="agent id")
    parser.add_argument("--engine", required=True)
    parser.add_argument("--profile")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt")
    prompt.add_argument("--prompt-file", help="read the prompt from a file ('-': stdin)")
    parser.add_argument("--var", action="append", help="NAME=VALUE or NAME:=JSON (repeatable)")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--wait", action="store_true", help="wait and print the finished job")
    parser.set_defaults(client_handler=submit)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def run_client_command(args: argparse.Namespace) -> int:
    result: int = args.client_handler(args, TowerClient(args.url, args.api_key))
    return result
