#!/usr/bin/python3
"""Squid's helpers for the egress proxy: one program, four modes (argv[1]).

  auth   auth_param basic. "<channel> <user> <password>": is the password the token of
         the running attempt the user names (<job id>.<attempt>)? OK or ERR.
  check  external_acl_type egress. "<channel> <user> <host> <port> <method> <token>": may
         this job reach host:port now? The host is resolved here, on the proxy's side,
         and tower judges its addresses too. OK tag=<tower's tag for this request>, or
         ERR with tower's reason. Each question names this instance of the proxy
         (EGRESS_INSTANCE, set by the entrypoint at each start): tower closes the
         requests an earlier instance left open (they ended with it).
  probe  external_acl_type tower. "<channel> <slot>": does tower's replica on that slot
         answer? (tower's own health check of this container)
  log    logfile_daemon. Squid's log commands on stdin; each request tower let go (its
         log line has tower's tag) is reported to tower when it ends, with its bytes and
         that tag (which tower checks: the line holds no token), in batches, and whether
         squid refused it after tower's yes (its denied_destination ACL: the name
         resolved to a non-public address when squid looked it up to connect). The line
         is also printed on the container's output, the tag replaced by "counted".

Tower answers on Unix sockets in the directory mounted at /run/parpaing: slot N is
TOWER_SOCKET with -N before its suffix (egress.sock -> egress-3.sock), one per replica on
the host. Slot 0 is asked first, then the others in turn: any replica answers for any
job (the answer is in PostgreSQL). Or, with TOWER_URL (http://host:port, compose: the
towers' EGRESS_LISTEN), over TCP: each address the host name resolves to (one per
replica) is asked in turn, the same way. A question tower cannot answer is a refusal: the
proxy fails closed.

Standard library only (the image's python3). Squid runs requests concurrently through
one process (concurrency=N: each line starts with a channel id, answered in any order).
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import random
import re
import socket
import sys
import threading
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

SOCKET = os.environ.get("TOWER_SOCKET", "/run/parpaing/egress.sock")
SLOTS = int(os.environ.get("TOWER_SLOTS", "16") or 16)
TOWER_URL = os.environ.get("TOWER_URL", "")
# This instance of the proxy: its container's host name and start time (egress/entrypoint).
INSTANCE = os.environ.get("EGRESS_INSTANCE", "")[:128]
TIMEOUT = 10.0
# A replica gone from the network may leave no one to refuse the connection: the next
# is asked soon rather than after TIMEOUT.
CONNECT_TIMEOUT = 2.0
THREADS = 32
BATCH = 200
# What squid's log line holds (squid.conf.template's logformat, in this order).
LOG_FIELDS = ("user", "method", "host", "port", "status", "result", "bytes", "tag", "error")
# Tower's tag of a request it let go (tower/egress/tags.py): "<serial>.<mac>".
TAG = re.compile(r"[0-9]{1,10}\.[0-9a-f]{32}")
COUNTED = "counted"
# The error page of squid's own address refusal (squid.conf.template's deny_info).
ADDRESS_REFUSED = "ERR_EGRESS_ADDRESS"
CANNOT_ASK = "the egress proxy cannot ask tower now; try again"


# --- asking tower ---------------------------------------------------------------------


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("tower", timeout=TIMEOUT)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(self._path)


class TcpConnection(http.client.HTTPConnection):
    def __init__(self, address: str, port: int) -> None:
        super().__init__(address, port, timeout=TIMEOUT)

    def connect(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), CONNECT_TIMEOUT)
        self.sock.settimeout(TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def slot_path(number: int) -> str:
    stem, dot, suffix = SOCKET.rpartition(".")
    return f"{stem}-{number}.{suffix}" if dot else f"{SOCKET}-{number}"


def tower_addresses(url: str) -> tuple[list[str], int]:
    """The addresses of TOWER_URL's host now (one per replica behind a service name),
    and its port; none when the name does not resolve."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or 80
    try:
        infos = socket.getaddrinfo(parts.hostname or "", port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return [], port
    return list(dict.fromkeys(str(info[4][0]) for info in infos)), port


def connections(slots: range | None) -> list[http.client.HTTPConnection]:
    """Where to ask, in order: each replica's socket slot (only `slots`, when given), or
    each address of TOWER_URL (any replica: `slots` does not name one over TCP)."""
    if TOWER_URL:
        addresses, port = tower_addresses(TOWER_URL)
        random.shuffle(addresses)  # the replicas share the questions
        return [TcpConnection(address, port) for address in addresses]
    found: list[http.client.HTTPConnection] = []
    for number in slots if slots is not None else range(SLOTS):
        if os.path.exists(slot_path(number)):
            found.append(UnixConnection(slot_path(number)))
    return found


class NoTower(Exception):
    """No replica answered."""


def ask(method: str, path: str, body: Any = None, slots: range | None = None) -> tuple[int, Any]:
    """(status, JSON answer) from the first replica that answers."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"} if data is not None else {}
    for connection in connections(slots):
        try:
            connection.request(method, path, body=data, headers=headers)
            reply = connection.getresponse()
            raw = reply.read()
        except OSError:
            continue  # a replica that died left its socket, or its address: the next answers
        finally:
            connection.close()
        if reply.status >= 500:
            continue
        return reply.status, (json.loads(raw) if raw else None)
    raise NoTower


# --- the ACL and auth helpers ---------------------------------------------------------


def encoded(text: str) -> str:
    """A value of squid's helper answer: one token, URL-encoded."""
    return urllib.parse.quote(text, safe="")


def authenticate(fields: list[str]) -> str:
    if len(fields) != 2:
        return "ERR"
    user, token = (urllib.parse.unquote(field) for field in fields)
    try:
        status, _ = ask("POST", "/egress/auth", {"user": user, "token": token})
    except NoTower:
        return f"BH message={encoded(CANNOT_ASK)}"
    return "OK" if status == 200 else "ERR"


def addresses_of(host: str, port: int) -> tuple[list[str], str | None]:
    """The host's addresses as squid will find them (this container's resolver, its
    /etc/hosts first), or why there are none."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        return [], str(error)
    found: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in found:
            found.append(address)
    return found, None


def check(fields: list[str]) -> str:
    # Squid appends the ACL's arguments (%DATA, "-" without any) after the format's fields.
    if len(fields) < 5 or not fields[2].isdigit():
        return f"ERR message={encoded('the request names no host and port')}"
    user, host, port, method, token = (urllib.parse.unquote(field) for field in fields[:5])
    addresses, unresolved = addresses_of(host, int(port))
    question = {
        "user": user,
        "token": token,
        "host": host,
        "port": int(port),
        "method": method,
        "addresses": addresses,
        "resolve_error": unresolved,
        "proxy": INSTANCE,
    }
    try:
        status, answer = ask("POST", "/egress/check", question)
    except NoTower:
        return f"ERR message={encoded(CANNOT_ASK)}"
    tag = str((answer or {}).get("tag") or "") if status == 200 else ""
    if status == 200 and TAG.fullmatch(tag):
        return f"OK tag={encoded(tag)}"
    if status == 200:
        return f"ERR message={encoded('tower let the request go without its tag')}"
    reason = (answer or {}).get("reason") or "refused"
    return f"ERR message={encoded(str(reason))}"


def probe(fields: list[str]) -> str:
    if not fields or not fields[0].isdigit() or int(fields[0]) >= SLOTS:
        return "ERR"
    number = int(fields[0])
    try:
        status, _ = ask("GET", "/egress/health", slots=range(number, number + 1))
    except NoTower:
        return "ERR"
    return "OK" if status == 200 else "ERR"


def serve(answer: Callable[[list[str]], str]) -> None:
    """Answer squid's concurrent requests: '<channel> <fields...>' lines on stdin, each
    answered '<channel> <answer>' on stdout as soon as it is known."""
    lock = threading.Lock()

    def respond(line: str) -> None:
        channel, *fields = line.split()
        try:
            reply = answer(fields)
        except Exception as error:  # never leave squid waiting on a channel
            print(f"parpaing-egress helper: {error!r}", file=sys.stderr, flush=True)
            reply = "BH"
        with lock:
            sys.stdout.write(f"{channel} {reply}\n")
            sys.stdout.flush()

    with ThreadPoolExecutor(THREADS) as threads:
        for line in sys.stdin:
            if line.strip():
                threads.submit(respond, line)


# --- the log daemon -------------------------------------------------------------------


def ended(line: str) -> dict[str, Any] | None:
    """The end of a request tower let go, from its log line; None for any other line."""
    values = line.split()
    if len(values) != len(LOG_FIELDS):
        return None
    entry = dict(zip(LOG_FIELDS, values, strict=True))
    if not TAG.fullmatch(entry["tag"]) or not entry["port"].isdigit():
        return None
    return {
        "user": urllib.parse.unquote(entry["user"]),
        "host": entry["host"],
        "port": int(entry["port"]),
        "method": entry["method"],
        "status": int(entry["status"]) if entry["status"].isdigit() else 0,
        "bytes": int(entry["bytes"]) if entry["bytes"].isdigit() else 0,
        "refused": entry["error"] == ADDRESS_REFUSED,
        "tag": entry["tag"],
    }


def printable(line: str) -> str:
    """The log line without tower's tag (it would let a reader of the container's output
    report the request's end before squid's own report): "counted" in its place."""
    values = line.split()
    if len(values) == len(LOG_FIELDS) and TAG.fullmatch(values[LOG_FIELDS.index("tag")]):
        values[LOG_FIELDS.index("tag")] = COUNTED
        return " ".join(values)
    return line


def report(entries: queue.Queue[dict[str, Any]]) -> None:
    """Send what ended to tower, as many at once as have piled up."""
    while True:
        batch = [entries.get()]
        while len(batch) < BATCH:
            try:
                batch.append(entries.get_nowait())
            except queue.Empty:
                break
        for _ in range(3):
            try:
                ask("POST", "/egress/done", {"entries": batch})
                break
            except NoTower:
                threading.Event().wait(1.0)
        else:
            print(f"parpaing-egress: {len(batch)} request ends not reported", file=sys.stderr)


def log_daemon() -> None:
    entries: queue.Queue[dict[str, Any]] = queue.Queue()
    threading.Thread(target=report, args=(entries,), daemon=True).start()
    for line in sys.stdin:
        if not line.startswith("L"):
            continue  # rotate, flush, buffering: nothing to do for a pipe to tower
        text = line[1:].rstrip("\n")
        print(f"egress: {printable(text)}", file=sys.stderr, flush=True)
        entry = ended(text)
        if entry is not None:
            entries.put(entry)


MODES: dict[str, Callable[[list[str]], str]] = {
    "auth": authenticate,
    "check": check,
    "probe": probe,
}


def main(argv: list[str]) -> int:
    mode = argv[1] if len(argv) > 1 else ""
    if mode == "log":
        log_daemon()
        return 0
    if mode not in MODES:
        print(f"usage: helper.py {'|'.join([*MODES, 'log'])}", file=sys.stderr)
        return 64
    serve(MODES[mode])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
