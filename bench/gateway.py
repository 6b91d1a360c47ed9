"""Gateway benchmark: what the gateway adds to a provider call, against calling the
provider directly, in the same run.

A benchmark, not a test: it prints figures and never fails on them. Run from the
repository root, with Docker up and the gateway image built (`parpaing images build`):
    .venv/bin/python bench/gateway.py [--calls 300] [--upload-mb 64]

Set-up: a private PostgreSQL, tower's token-check listener on a Unix socket, the real
gateway container (as tower runs it) and a minimal "provider" on this host's address on
the gateway's egress network, answering every call at once. One job is running, with a
token the benchmark holds.
1. Latency, CALLS sequential small POSTs on one keep-alive connection (p50, p95):
   a. direct to the provider (baseline);
   b. through the gateway with its auth cache on (GATEWAY_AUTH_CACHE_SECONDS=1);
   c. through the gateway with the cache off (0): every call asks tower.
2. Upload: one POST of UPLOAD_MB, direct and through the gateway (MB/s).
Latency ratios are gateway / direct; the upload ratio is gateway throughput / direct.
No target: a provider call takes hundreds of milliseconds to minutes, so what matters
is that the gateway's share stays around a millisecond.
"""

# ruff: noqa: E402  (sys.path is repaired below, before the imports that need it)
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import argparse
import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import docker
import httpx
from docker.errors import APIError, NotFound

from tower.db.embedded import LocalPostgres
from tower.db.migrate import migrate
from tower.db.pool import Pool, create_pool
from tower.gateway import tokens
from tower.gateway.container import ensure_egress_network, ensure_gateway
from tower.gateway.listener import AuthListeners
from tower.settings import Settings

INSERT_RUNNING = """
INSERT INTO jobs (job_id, agent_id, engine, profile, status, request, attempt, started_at,
                  lease_owner, lease_token, lease_until, gateway_token_sha256)
VALUES ($1, 'bench', 'claude-code', 'default', 'running', '{}'::jsonb, 1, now(),
        'bench', gen_random_uuid(), now() + interval '1 hour', $2)
"""
ANSWER = b'{"type":"message","content":[]}'


async def provider(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A provider that answers every HTTP/1.1 request at once (keep-alive, any body)."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            chunked = False
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                if name.strip().lower() == b"transfer-encoding" and b"chunked" in value:
                    chunked = True
            if chunked:
                await _drain_chunked(reader)
            else:
                await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(ANSWER)}\r\n\r\n".encode()
                + ANSWER
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _drain_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readline()).strip() or b"0", 16)
        await reader.readexactly(size + 2)
        if size == 0:
            return


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def latencies(base: str, calls: int, headers: dict[str, str]) -> list[float]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for _ in range(10):  # warm the connection (and the cache)
            (await client.post("/v1/messages", content=b"{}", headers=headers)).raise_for_status()
        measured = []
        for _ in range(calls):
            started = time.perf_counter()
            reply = await client.post("/v1/messages", content=b"{}", headers=headers)
            measured.append(time.perf_counter() - started)
            reply.raise_for_status()
    return measured


async def upload_seconds(base: str, megabytes: int, headers: dict[str, str]) -> float:
    body = b"x" * (megabytes << 20)
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        started = time.perf_counter()
        (await client.post("/v1/messages", content=body, headers=headers)).raise_for_status()
        return time.perf_counter() - started


def report(name: str, values: list[float], baseline: list[float]) -> None:
    p50, p95 = percentile(values, 0.5) * 1000, percentile(values, 0.95) * 1000
    b50 = percentile(baseline, 0.5) * 1000
    print(
        f"{name:<28} p50 {p50:6.2f} ms  p95 {p95:6.2f} ms  "
        f"p50 overhead {p50 - b50:5.2f} ms  ratio {p50 / b50:5.2f}"
    )


@contextlib.contextmanager
def private_postgres() -> Iterator[LocalPostgres]:
    directory = tempfile.mkdtemp(prefix="parpaing-bench-gw-")
    server = LocalPostgres(Path(directory) / "pgdata").start()
    try:
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.asynccontextmanager
async def bench_rig(client: docker.DockerClient, url: str) -> AsyncIterator[tuple[Settings, Pool]]:
    suffix = uuid.uuid4().hex[:8]
    socket_dir = tempfile.mkdtemp(prefix="pgb-", dir="/tmp")
    settings = Settings(
        database_url=url,
        gateway_url=f"http://pgw-bench-{suffix}:8080",
        gateway_egress_net=f"parpaing-egress-bench-{suffix}",
        gateway_auth_socket=f"{socket_dir}/auth.sock",
        worker_net=f"parpaing-workers-bench-{suffix}",
        gateway_socket_volume=f"parpaing-gateway-socket-bench-{suffix}",
        anthropic_api_key="sk-ant-bench",
    )
    pool = await create_pool(url, 4)
    listeners = await AuthListeners.start(settings, pool, unix_socket=True)
    try:
        yield settings, pool
    finally:
        await listeners.stop()
        await pool.close()
        for remove in (
            lambda: client.containers.get(f"pgw-bench-{suffix}").remove(force=True),
            lambda: client.volumes.get(settings.gateway_socket_volume).remove(force=True),
            lambda: client.networks.get(settings.gateway_egress_net).remove(),
        ):
            with contextlib.suppress(NotFound, APIError):
                remove()
        shutil.rmtree(socket_dir, ignore_errors=True)


def gateway_base(client: docker.DockerClient, settings: Settings, cache: int) -> str:
    current = settings.model_copy(update={"gateway_auth_cache_seconds": cache})
    container_id = ensure_gateway(client, current, say=lambda _: None)
    networks = client.containers.get(container_id).attrs["NetworkSettings"]["Networks"]
    return f"http://{networks[settings.gateway_egress_net]['IPAddress']}:8080/anthropic"


async def main(calls: int, upload_mb: int) -> None:
    client = docker.from_env()
    with private_postgres() as server:
        await migrate(server.url)
        async with bench_rig(client, server.url) as (settings, pool):
            ensure_egress_network(client, settings.gateway_egress_net)
            details = client.api.inspect_network(settings.gateway_egress_net)
            host = details["IPAM"]["Config"][0]["Gateway"]
            upstream = await asyncio.start_server(provider, host=host, port=0)
            port = upstream.sockets[0].getsockname()[1]
            settings = settings.model_copy(update={"anthropic_upstream": f"http://{host}:{port}"})
            token = tokens.mint()
            async with pool.acquire() as connection:
                await connection.execute(INSERT_RUNNING, "bench-job", tokens.digest(token))
            headers = {"x-api-key": token, "anthropic-version": "2023-06-01"}

            direct = await latencies(f"http://{host}:{port}", calls, headers)
            cached = await latencies(gateway_base(client, settings, cache=1), calls, headers)
            uncached = await latencies(gateway_base(client, settings, cache=0), calls, headers)
            print(f"{calls} sequential calls each, one keep-alive connection")
            report("direct (baseline)", direct, direct)
            report("gateway, auth cache 1 s", cached, direct)
            report("gateway, auth cache off", uncached, direct)

            plain = await upload_seconds(f"http://{host}:{port}", upload_mb, headers)
            through = await upload_seconds(gateway_base(client, settings, 0), upload_mb, headers)
            print(
                f"upload {upload_mb} MB: direct {upload_mb / plain:7.1f} MB/s, "
                f"gateway {upload_mb / through:7.1f} MB/s, gateway / direct {plain / through:4.2f}"
            )
            upstream.close()
            await upstream.wait_closed()
    client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--upload-mb", type=int, default=64)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.calls, arguments.upload_mb))
