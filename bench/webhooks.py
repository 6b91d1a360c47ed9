"""Webhook benchmark: delivery latency and throughput against direct POSTs to the same receiver.

A benchmark, not a test: it prints figures and targets, and never fails on them.
Run from the repository root:
    .venv/bin/python bench/webhooks.py [--deliveries 500] [--latencies 100]

A tower process (`parpaing serve`, simulated runner, WEBHOOK_ALLOW_PRIVATE=true) runs on a
private PostgreSQL; a receiver in this process answers 200 on loopback. The benchmark makes
jobs terminal itself, with the tower's own FINISH statement (which writes the outbox row and
its NOTIFY), on jobs it holds the lease of, so no dispatcher is involved.

1. Latency. LATENCIES times, one after the other: from sending the FINISH statement to the
   webhook's arrival at the receiver. Baseline, same run: one signed POST sent directly by
   this process on a new connection (as the deliverer sends). Target: p99 <= 100 ms.
2. Throughput. DELIVERIES jobs finished at once; deliveries/s until the last arrives.
   Baseline, same run: the same number of POSTs sent directly with WEBHOOK_CONCURRENCY at
   a time. Target: tower / direct >= 0.3.
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
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx

from tower.db.embedded import LocalPostgres, free_port
from tower.db.migrate import migrate
from tower.db.pool import create_pool
from tower.queue import queries
from tower.webhooks import signing

LATENCY_TARGET_MS = 100.0
THROUGHPUT_TARGET = 0.3
SECRET = signing.new_secret()
DONE = queries.Finish("completed", 0, "ok", None, None, None, 1)

# A running job leased to this benchmark for an hour: no dispatcher or reaper touches it.
INSERT_HELD_JOB = """
INSERT INTO jobs (job_id, agent_id, engine, profile, status, request, lease_owner,
                  lease_token, lease_until, started_at, attempt)
VALUES ($1, 'bench', 'claude-code', 'default', 'running',
        jsonb_build_object('webhook_url', $2::text), 'bench', $3,
        now() + interval '1 hour', now(), 1)
"""


class Receiver:
    """Answers 200 to every POST; notes when each webhook-id arrived."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.changed = asyncio.Condition()
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            fields = dict(line.split(":", 1) for line in head.split("\r\n")[1:] if ":" in line)
            await reader.readexactly(int(fields.get("content-length", "0")))
            arrived = time.perf_counter()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
            async with self.changed:
                self.arrivals[fields["webhook-id"].strip()] = arrived
                self.changed.notify_all()
        finally:
            writer.close()

    async def arrival_of(self, message_id: str) -> float:
        async with self.changed:
            await self.changed.wait_for(lambda: message_id in self.arrivals)
            return self.arrivals[message_id]

    async def until_count(self, count: int) -> float:
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.arrivals) >= count)
            return max(self.arrivals.values())


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.serve, "127.0.0.1", 0, backlog=1024)
    receiver.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    async with server:
        yield receiver


@contextlib.asynccontextmanager
async def tower(database_url: str, concurrency: int) -> AsyncIterator[None]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "TOWER_RUNNER": "simulated",
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "WEBHOOK_CONCURRENCY": str(concurrency),
    }
    port = free_port()
    argv = [sys.executable, "-m", "tower.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    log = Path(tempfile.mkdtemp(prefix="parpaing-bench-webhooks-")) / "tower.log"
    process = _spawn(argv, env, log)
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            for _ in range(600):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"http://127.0.0.1:{port}/health")).status_code:
                        break
                if process.poll() is not None:
                    raise RuntimeError(f"tower exited:\n{log.read_text()}")
                await asyncio.sleep(0.1)
        yield
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait)


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=HERE.parent, env=env, stdout=out, stderr=out)


async def held_job(connection: asyncpg.Connection, url: str) -> tuple[str, uuid.UUID]:
    job_id, token = f"bench-{uuid.uuid4().hex[:12]}", uuid.uuid4()
    await connection.execute(INSERT_HELD_JOB, job_id, url, token)
    return job_id, token


async def delivery_id(connection: asyncpg.Connection, job_id: str) -> str:
    found: str = await connection.fetchval(
        "SELECT delivery_id FROM webhook_deliveries WHERE job_id = $1", job_id
    )
    return found


# --- direct POSTs: the baseline ------------------------------------------------------------


async def direct_post(client: httpx.AsyncClient, url: str, receiver: Receiver) -> float:
    message_id = f"msg_{uuid.uuid4().hex}"
    body = b'{"type":"job.completed","data":{"job_id":"bench"}}'
    key = signing.signing_key(SECRET)
    headers = signing.headers(key, message_id, int(time.time()), body)
    sent = time.perf_counter()
    await client.post(url, content=body, headers={"content-type": "application/json", **headers})
    return (await receiver.arrival_of(message_id) - sent) * 1000


def direct_client() -> httpx.AsyncClient:
    limits = httpx.Limits(max_keepalive_connections=0)
    return httpx.AsyncClient(trust_env=False, limits=limits, timeout=30)


# --- 1. latency ----------------------------------------------------------------------------


async def latencies(pool: asyncpg.Pool, receiver: Receiver, count: int) -> list[float]:
    found = []
    async with pool.acquire() as connection:
        for _ in range(count):
            job_id, token = await held_job(connection, receiver.url)
            sent = time.perf_counter()
            assert await queries.finish(connection, job_id, token, DONE)
            message_id = await delivery_id(connection, job_id)
            found.append((await receiver.arrival_of(message_id) - sent) * 1000)
    return found


# --- 2. throughput -------------------------------------------------------------------------


async def tower_throughput(pool: asyncpg.Pool, receiver: Receiver, count: int) -> float:
    async with pool.acquire() as connection:
        held = [await held_job(connection, receiver.url) for _ in range(count)]
    before = len(receiver.arrivals)
    started = time.perf_counter()

    async def finish(job_id: str, token: uuid.UUID) -> None:
        async with pool.acquire() as connection:
            await queries.finish(connection, job_id, token, DONE)

    await asyncio.gather(*(finish(job_id, token) for job_id, token in held))
    last = await receiver.until_count(before + count)
    return count / (last - started)


async def direct_throughput(receiver: Receiver, count: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)
    async with direct_client() as client:

        async def one() -> None:
            async with gate:
                await direct_post(client, receiver.url, receiver)

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)))
        return count / (time.perf_counter() - started)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="parpaing-bench-") as root:
        server = await asyncio.to_thread(LocalPostgres(Path(root) / "pgdata").start)
        try:
            await migrate(server.url)
            async with receiving() as receiver, tower(server.url, args.concurrency):
                pool = await create_pool(server.url, 16)
                try:
                    await measure(pool, receiver, args)
                finally:
                    await pool.close()
        finally:
            await asyncio.to_thread(server.stop, "immediate")


async def measure(pool: asyncpg.Pool, receiver: Receiver, args: argparse.Namespace) -> None:
    async with direct_client() as client:
        direct = [await direct_post(client, receiver.url, receiver) for _ in range(args.latencies)]
    webhook = await latencies(pool, receiver, args.latencies)
    print(f"latency over {args.latencies} webhooks (FINISH sent -> request at the receiver):")
    for name, values in (("tower", webhook), ("direct", direct)):
        print(
            f"  {name:<7} p50 {percentile(values, 0.5):.1f} ms, p99 {percentile(values, 0.99):.1f}"
            f" ms, mean {statistics.fmean(values):.1f} ms"
        )
    p99 = percentile(webhook, 0.99)
    verdict = "ok" if p99 <= LATENCY_TARGET_MS else "ABOVE TARGET"
    ratio = percentile(webhook, 0.5) / percentile(direct, 0.5)
    print(
        f"  p50 ratio tower/direct {ratio:.1f}; target p99 <= {LATENCY_TARGET_MS:g} ms: {verdict}"
    )
    print(f"throughput: {args.deliveries} deliveries, WEBHOOK_CONCURRENCY={args.concurrency}")
    through_tower = await tower_throughput(pool, receiver, args.deliveries)
    through_direct = await direct_throughput(receiver, args.deliveries, args.concurrency)
    ratio = through_tower / through_direct
    verdict = "ok" if ratio >= THROUGHPUT_TARGET else "BELOW TARGET"
    print(f"  tower:  {through_tower:,.0f} deliveries/s (FINISH sent -> last arrival)")
    print(f"  direct: {through_direct:,.0f} POSTs/s")
    print(f"  ratio:  {ratio:.2f}, target >= {THROUGHPUT_TARGET}: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=500)
    parser.add_argument("--latencies", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8, help="WEBHOOK_CONCURRENCY")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
