"""Pieces of the gateway's end-to-end tests: a recording upstream, gateway settings with
names of their own, and running jobs whose tokens the test holds.

The upstream (a "provider") is a small HTTP server in the test process, bound to this
host's address on the test's own egress network and nowhere else: only the gateway (on
that network) can reach it, and nothing is ever sent off this host. It records every
request, and can hold a streamed answer half-way until the test releases it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import docker
from docker.errors import APIError, NotFound

from tests.e2e.support import docker_settings
from tower.gateway import tokens
from tower.gateway.container import ensure_egress_network
from tower.settings import Settings

REAL_ANTHROPIC_KEY = "sk-ant-real-" + "k" * 24
REAL_OPENAI_KEY = "sk-openai-real-" + "o" * 24
FIRST_CHUNK = b'event: message_start\ndata: {"type":"message_start"}\n\n'
LAST_CHUNK = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
RELEASE_TIMEOUT = 30.0


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    """What the fake provider saw; `release` lets a held stream finish."""

    calls: list[Call] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    first_chunk_sent: threading.Event = field(default_factory=threading.Event)
    released_in_time: bool | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def snapshot(self) -> list[Call]:
        with self.lock:
            return list(self.calls)


def _handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: object) -> None:
            return None

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            recorder.record(Call(self.command, self.path, headers, body))
            # A body that starts with "stream" (the streaming test's) gets a held stream.
            if body.startswith(b'{"stream"'):
                self._held_stream()
            else:
                self._json({"ok": True, "path": self.path})

        def _json(self, value: Any) -> None:
            data = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _held_stream(self) -> None:
            # Chunked SSE: the first event, then nothing until the test has seen it
            # arrive through the gateway (or gives up), then the last one.
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self._chunk(FIRST_CHUNK)
            recorder.first_chunk_sent.set()
            recorder.released_in_time = recorder.release.wait(RELEASE_TIMEOUT)
            self._chunk(LAST_CHUNK)
            self._chunk(b"")

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    return Handler


@contextlib.contextmanager
def recording_upstream(address: str) -> Iterator[tuple[Recorder, str]]:
    """A recording provider on `address` (a free port); yields it and its base URL."""
    recorder = Recorder()
    server = ThreadingHTTPServer((address, 0), _handler(recorder))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder, f"http://{address}:{server.server_address[1]}"
    finally:
        recorder.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass(frozen=True)
class GatewayNames:
    suffix: str
    egress_net: str
    container: str
    socket_dir: str

    @property
    def url(self) -> str:
        return f"http://{self.container}:8080"

    @property
    def socket_volume(self) -> str:
        return f"{self.container}-socket"


@contextlib.contextmanager
def gateway_names(client: docker.DockerClient) -> Iterator[GatewayNames]:
    """Unique names for one test's gateway; its container, network and socket go after."""
    suffix = uuid.uuid4().hex[:10]
    # A short path: a Unix socket's path must fit in 107 bytes.
    socket_dir = tempfile.mkdtemp(prefix="pgw-", dir="/tmp")
    names = GatewayNames(suffix, f"parpaing-egress-{suffix}", f"pgw-{suffix}", socket_dir)
    try:
        yield names
    finally:
        with contextlib.suppress(NotFound, APIError):
            client.containers.get(names.container).remove(force=True)
        # Workers still holding it are removed after, and their clean-up removes it then.
        with contextlib.suppress(NotFound, APIError):
            client.volumes.get(names.socket_volume).remove(force=True)
        with contextlib.suppress(NotFound, APIError):
            client.networks.get(names.egress_net).remove()
        shutil.rmtree(socket_dir, ignore_errors=True)


def egress_host_address(client: docker.DockerClient, names: GatewayNames) -> str:
    """Create the test's egress network now and return this host's address on it."""
    ensure_egress_network(client, names.egress_net)
    details = client.api.inspect_network(names.egress_net)
    return str(details["IPAM"]["Config"][0]["Gateway"])


def gateway_settings(
    database_url: str,
    worker_net: str,
    names: GatewayNames,
    image: str,
    upstream: str,
    **overrides: Any,
) -> Settings:
    """Settings of a tower that runs its own gateway in front of the recording upstream."""
    values: dict[str, Any] = {
        "gateway_managed": True,
        "gateway_url": names.url,
        "gateway_image": image,
        "gateway_egress_net": names.egress_net,
        "gateway_auth_socket": f"{names.socket_dir}/auth.sock",
        "gateway_socket_volume": names.socket_volume,
        "gateway_auth_cache_seconds": 1,
        # No egress proxy unless a test asks for one (tests/e2e/egress.py): it would
        # follow GATEWAY_MANAGED, and needs names of its own on a shared daemon.
        "egress_managed": False,
        "anthropic_api_key": REAL_ANTHROPIC_KEY,
        "openai_api_key": REAL_OPENAI_KEY,
        "anthropic_upstream": upstream,
        "openai_upstream": upstream,
        "gemini_upstream": upstream,
    }
    return docker_settings(database_url, worker_net, **{**values, **overrides})


def gateway_address(client: docker.DockerClient, names: GatewayNames) -> str:
    """The gateway's base URL from this host: its address on the egress network."""
    container = client.containers.get(names.container)
    address = container.attrs["NetworkSettings"]["Networks"][names.egress_net]["IPAddress"]
    return f"http://{address}:8080"


# --- jobs the test holds the token of ------------------------------------------------------

# A job as the dispatcher leaves it when it claims one, with a token the test minted: the
# lease is long, and owned by nobody who runs, so the row stays running until the test
# ends it through the same fenced statements tower uses.
INSERT_RUNNING = """
INSERT INTO jobs (job_id, agent_id, engine, profile, status, request, attempt, started_at,
                  lease_owner, lease_token, lease_until, gateway_token_sha256)
VALUES ($1, 'e2e', 'shell', 'shell', 'running', '{}'::jsonb, 1, now(),
        'gateway-test', $2, now() + interval '1 hour', $3)
"""


@dataclass(frozen=True)
class HeldJob:
    job_id: str
    lease_token: UUID
    token: str


async def running_job(database_url: str) -> HeldJob:
    job = HeldJob(f"e2e-{uuid.uuid4().hex[:12]}", uuid.uuid4(), tokens.mint())
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            INSERT_RUNNING, job.job_id, job.lease_token, tokens.digest(job.token)
        )
    finally:
        await connection.close()
    return job


def anthropic_headers(token: str) -> dict[str, str]:
    return {
        "x-api-key": token,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "tools-2024-04-04",
        "content-type": "application/json",
    }


def path_of(url: str) -> str:
    return url.split("//", 1)[-1].split("/", 1)[-1]


def socket_path(settings: Settings) -> Path:
    return Path(settings.gateway_auth_socket)
