"""Queue benchmark: end-to-end jobs/s against a pgbench baseline, and /wait wake-up latency.

A benchmark, not a test: it prints figures and targets, and never fails on them.
Run from the repository root:  .venv/bin/python bench/queue.py [--jobs 2000] [--clients 8]

1. Throughput. TOWERS `parpaing serve` processes (as production runs them: uvloop,
   httptools) with the simulated runner (an empty prompt is a no-op job) share a private
   PostgreSQL. From another process, CLIENTS concurrent HTTP clients (spread over the
   towers) submit JOBS jobs; the clock stops when every job is terminal. The baseline,
   measured in the same run on the same server, is pgbench with CLIENTS clients running
   the same row lifecycle on a copy of the jobs table (INSERT, UPDATE to running, UPDATE
   to completed: three transactions, as submit, claim and finish are). The two alternate
   for ROUNDS rounds, so that a neighbour's load falls on both; the figure is the median
   of the rounds' ratios. Target: tower / pgbench >= 0.3.
2. Wake-up latency. WAITS times, a client blocks in GET /jobs/{id}/wait on a job this script
   owns; the script commits the terminal state with its NOTIFY, and measures from sending
   that COMMIT to the arrival of the /wait response. Target: p99 <= 50 ms.
3. Claim throughput (once the towers are stopped). CLAIMS pending jobs (of CLAIM_TENANTS
   tenants, in turn) are claimed CLAIM_BATCH at a time by CLAIMERS connections running
   tower's own claim (lifecycle.CLAIM through queue/queries.claim) until none is left;
   jobs/s. Baseline in the same run: the bare SKIP LOCKED claim (one UPDATE of the
   highest-priority pending rows of bench_jobs) on as many rows. ROUNDS alternations, the
   median ratio; compared between versions of tower (issue 20: within 20 % of before).
"""

# ruff: noqa: E402  (sys.path is repaired below, before the imports that need it)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's directory heads sys.path and this file's name shadows the
# standard library's `queue` (which uvicorn's imports need): put the repository root there.
HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import re
import statistics
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from tower.db.channels import JOB_FINISHED
from tower.db.embedded import LocalPostgres, free_port
from tower.db.migrate import migrate

THROUGHPUT_TARGET = 0.3
P99_TARGET_MS = 50.0

# The baseline's table: the jobs table's columns, defaults, constraints and indexes.
CREATE_BASELINE_TABLE = "CREATE TABLE bench_jobs (LIKE jobs INCLUDING ALL)"

PGBENCH_SCRIPT = """\
\\set id random(1, 1000000000000)
INSERT INTO bench_jobs (job_id, agent_id, engine, profile, request) \
VALUES ('b-' || :id, 'bench', 'claude-code', 'default', '{"prompt": ""}') ON CONFLICT DO NOTHING;
UPDATE bench_jobs SET status = 'running', started_at = now(), attempt = attempt + 1 \
WHERE job_id = 'b-' || :id;
UPDATE bench_jobs SET status = 'completed', finished_at = now(), exit_code = 0 \
WHERE job_id = 'b-' || :id;
"""

# The bare claim: what any SKIP LOCKED queue does, without events, tokens, NOTIFY or
# tenants. Its own index, so it is the same whatever indexes the jobs table has.
CREATE_BASELINE_CLAIM_INDEX = """
CREATE INDEX bench_jobs_claimable ON bench_jobs (priority DESC, created_at)
WHERE status = 'pending'
"""
BASELINE_CLAIM = """
UPDATE bench_jobs SET status = 'running', lease_owner = $1, attempt = attempt + 1,
       lease_until = now() + interval '30 seconds', started_at = now()
WHERE job_id IN (
    SELECT job_id FROM bench_jobs WHERE status = 'pending'
    ORDER BY priority DESC, created_at LIMIT $2 FOR UPDATE SKIP LOCKED)
RETURNING job_id
"""
FILL_BASELINE = """
INSERT INTO bench_jobs (job_id, agent_id, engine, profile, request)
SELECT 'c-' || $1 || '-' || g, 'claim', 'claude-code', 'default', '{}'
FROM generate_series(1, $2) AS g
"""
# Pending jobs for the claim: spread over tenants in turn when there are several.
FILL_JOBS = """
INSERT INTO jobs (job_id, agent_id, engine, profile, request)
SELECT 'c-' || $1 || '-' || g, 'claim', 'claude-code', 'default', '{}'
FROM generate_series(1, $2) AS g
"""
FILL_TENANT_JOBS = """
INSERT INTO jobs (job_id, agent_id, engine, profile, request, tenant)
SELECT 'c-' || $1 || '-' || g, 'claim', 'claude-code', 'default', '{}', 'bench-' || (g % $3)
FROM generate_series(1, $2) AS g
"""
MAKE_TENANTS = """
INSERT INTO tenants (name) SELECT 'bench-' || g FROM generate_series(0, $1 - 1) AS g
ON CONFLICT DO NOTHING
"""

COUNT_UNFINISHED = "SELECT count(*) FROM jobs WHERE status IN ('pending', 'running')"

# The server's clock on both ends: from the first job's insert to the last job's finish.
SUBMIT_TO_FINISH_SECONDS = """
SELECT extract(epoch FROM max(finished_at) - min(created_at))::float8 FROM jobs
WHERE agent_id = $1
"""

# A job the dispatcher leaves alone: already running, leased to nobody alive for an hour.
INSERT_OWNED_JOB = """
INSERT INTO jobs (job_id, agent_id, engine, profile, status, request, lease_owner,
                  lease_until, started_at)
VALUES ($1, 'bench', 'claude-code', 'default', 'running', '{}'::jsonb, 'bench',
        now() + interval '1 hour', now())
"""

FINISH_OWNED_JOB = """
UPDATE jobs SET status = 'completed', finished_at = now(), exit_code = 0, result = ''
WHERE job_id = $1
"""

NOTIFY_FINISHED = f"SELECT pg_notify('{JOB_FINISHED}', $1)"


# --- the tower under test --------------------------------------------------------------


@contextlib.asynccontextmanager
async def towers(database_url: str, count: int, concurrency: int) -> AsyncIterator[list[str]]:
    """COUNT `parpaing serve` processes on one database, as replicas run in production
    (uvloop, httptools, access log on); yields their base URLs."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "TOWER_RUNNER": "simulated",
        "TOWER_API_KEY": "",
        "MAX_CONCURRENT_JOBS": str(concurrency),
        "DB_POOL_SIZE": str(concurrency + 8),
    }
    with tempfile.TemporaryDirectory(prefix="parpaing-bench-towers-") as logs:
        started = [_spawn_tower(env, Path(logs) / f"tower-{index}.log") for index in range(count)]
        try:
            for tower in started:
                await _until_serving(tower)
            yield [tower.url for tower in started]
        finally:
            for tower in started:
                tower.process.terminate()
            for tower in started:
                await asyncio.to_thread(tower.process.wait)


@dataclass(frozen=True)
class Tower:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _spawn_tower(env: dict[str, str], log_path: Path) -> Tower:
    port = free_port()
    argv = [sys.executable, "-m", "tower.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            argv, cwd=HERE.parent, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    return Tower(f"http://127.0.0.1:{port}", process, log_path)


async def _until_serving(tower: Tower) -> None:
    async with httpx.AsyncClient(base_url=tower.url, timeout=5) as client:
        for _ in range(600):
            if tower.process.poll() is not None:
                raise RuntimeError(f"tower exited during start-up:\n{tower.log()}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/openapi.json")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"tower did not answer within a minute:\n{tower.log()}")


# --- 1. throughput -----------------------------------------------------------------------


async def tower_throughput(
    base_urls: list[str], database_url: str, jobs: int, clients: int, agent_id: str
) -> float:
    """Jobs/s of one round, whose jobs carry AGENT_ID."""
    # The load comes from another process, as pgbench's does, so the clients do not
    # take the towers' interpreter time.
    load = multiprocessing.get_context("spawn").Process(
        target=submit_jobs, args=(base_urls, jobs, clients, agent_id), daemon=True
    )
    load.start()
    await asyncio.to_thread(load.join)
    if load.exitcode != 0:
        raise RuntimeError(f"the submitting process failed with exit code {load.exitcode}")
    await _until_all_finished(database_url)
    span = await _first_submit_to_last_finish(database_url, agent_id)
    print(f"  tower:   {jobs} jobs in {span:.2f}s = {jobs / span:,.0f} jobs/s (submit to finish)")
    return jobs / span


def submit_jobs(base_urls: list[str], jobs: int, clients: int, agent_id: str) -> None:
    """In the load process: CLIENTS concurrent clients share JOBS submissions; client i
    talks to tower i mod len(base_urls), as a load balancer would spread them."""
    per_client = [jobs // clients + (1 if i < jobs % clients else 0) for i in range(clients)]
    body = json.dumps({"agent_id": agent_id, "engine": "claude-code", "prompt": ""}).encode()
    asyncio.run(_submit_all(base_urls, per_client, body))


async def _submit_all(base_urls: list[str], per_client: list[int], body: bytes) -> None:
    await asyncio.gather(
        *(
            _submit_many(base_urls[index % len(base_urls)], count, body)
            for index, count in enumerate(per_client)
        )
    )


async def _submit_many(base_url: str, count: int, body: bytes) -> None:
    """One keep-alive connection sending COUNT `POST /jobs`, one after the other, as a
    pgbench client sends its transactions. A plain HTTP/1.1 exchange rather than a
    full-featured client: the load generator should cost little CPU, as pgbench does,
    because it shares the machine with what it measures. Every answer must be a 202."""
    url = urllib.parse.urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    request = (
        f"POST /jobs HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    try:
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            body = await reader.readexactly(int(length.group(1)) if length else 0)
            if not head.startswith(b"HTTP/1.1 202 "):
                raise RuntimeError(f"POST /jobs answered {head!r} {body!r}")
    finally:
        writer.close()


async def _first_submit_to_last_finish(database_url: str, agent_id: str) -> float:
    connection = await asyncpg.connect(database_url)
    try:
        span: float = await connection.fetchval(SUBMIT_TO_FINISH_SECONDS, agent_id)
    finally:
        await connection.close()
    return span


async def _until_all_finished(database_url: str) -> None:
    finished = asyncio.Event()
    connection = await asyncpg.connect(database_url)
    await connection.add_listener(JOB_FINISHED, lambda *_: finished.set())
    try:
        while True:
            finished.clear()
            if not await connection.fetchval(COUNT_UNFINISHED):
                return
            # Woken by the next finish; the timeout only guards against a lost hint.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), 1.0)
    finally:
        await connection.close()


async def create_baseline_table(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(CREATE_BASELINE_TABLE)
    finally:
        await connection.close()


async def pgbench_throughput(server: LocalPostgres, jobs: int, clients: int) -> float:
    script = server.datadir.parent / "lifecycle.sql"  # in the run's temporary directory
    script.write_text(PGBENCH_SCRIPT)
    argv = [server.binary("pgbench"), "-n", "-f", str(script), "-c", str(clients)]
    argv += ["-j", str(clients), "-t", str(max(1, jobs // clients))]
    argv += ["-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "postgres"]
    # The embedded server asks for its password (0600 file, libpq's format).
    env = {**os.environ, "PGPASSFILE": str(server.password_file)}
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, env=env)
    match = re.search(r"tps = ([\d.]+)", done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"pgbench failed: {done.stderr or done.stdout}")
    tps = float(match.group(1))
    print(f"  pgbench: {tps:,.0f} lifecycles/s (INSERT + 2 UPDATEs, {clients} clients)")
    return tps


# --- 2. wake-up latency ------------------------------------------------------------------


async def wait_latencies(base_url: str, database_url: str, waits: int) -> list[float]:
    connection = await asyncpg.connect(database_url)
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            return [await _one_wake_up(client, connection) for _ in range(waits)]
    finally:
        await connection.close()


async def _one_wake_up(client: httpx.AsyncClient, connection: asyncpg.Connection) -> float:
    job_id = f"bench-{uuid.uuid4().hex[:12]}"
    await connection.execute(INSERT_OWNED_JOB, job_id)
    arrived: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    waiter = asyncio.create_task(_wait(client, job_id, arrived))
    # No event says "the waiter is subscribed"; a short pause makes it very likely, and
    # a late subscriber still finds the row terminal on its re-read.
    await asyncio.sleep(0.02)
    transaction = connection.transaction()
    await transaction.start()
    await connection.execute(FINISH_OWNED_JOB, job_id)
    await connection.execute(NOTIFY_FINISHED, job_id)
    # Timed from sending COMMIT: the waiter may be woken before the COMMIT reply reaches
    # this coroutine, so this is the earliest moment the commit can be said to happen.
    committing = time.perf_counter()
    await transaction.commit()
    await waiter
    return (await arrived - committing) * 1000


async def _wait(client: httpx.AsyncClient, job_id: str, arrived: asyncio.Future[float]) -> None:
    response = await client.get(f"/jobs/{job_id}/wait", params={"timeout": 30})
    arrived.set_result(time.perf_counter())
    if response.json().get("status") != "completed":
        raise RuntimeError(f"/wait answered {response.status_code}: {response.text}")


# --- 3. claim throughput ------------------------------------------------------------------


async def claim_ratios(database_url: str, args: argparse.Namespace) -> list[float]:
    connections = [await asyncpg.connect(database_url) for _ in range(args.claimers)]
    try:
        await connections[0].execute(CREATE_BASELINE_CLAIM_INDEX)
        if args.claim_tenants > 1:
            await connections[0].execute(MAKE_TENANTS, args.claim_tenants)
        ratios = []
        for index in range(args.rounds):
            print(f" round {index + 1}:")
            tower = await _claim_rate(connections, args, index, _tower_claim)
            bare = await _claim_rate(connections, args, index, _bare_claim)
            print(f"  tower's claim: {tower:,.0f} jobs/s; the bare claim: {bare:,.0f} jobs/s")
            print(f"  ratio:   {tower / bare:.2f}")
            ratios.append(tower / bare)
        return ratios
    finally:
        for connection in connections:
            await connection.close()


async def _tower_claim(connection: asyncpg.Connection, batch: int) -> int:
    from tower.queue import queries  # the tower under test's own claim

    return len(await queries.claim(connection, "bench-claimer", 30.0, batch))


async def _bare_claim(connection: asyncpg.Connection, batch: int) -> int:
    return len(await connection.fetch(BASELINE_CLAIM, "bench-claimer", batch))


async def _claim_rate(
    connections: list[asyncpg.Connection], args: argparse.Namespace, index: int, claim: Any
) -> float:
    """Jobs/s: every pending job claimed, CLAIM_BATCH at a time by each connection."""
    tag = f"{index}-{claim.__name__.strip('_')}"
    if claim is _bare_claim:
        await connections[0].execute(FILL_BASELINE, tag, args.claims)
    elif args.claim_tenants > 1:
        await connections[0].execute(FILL_TENANT_JOBS, tag, args.claims, args.claim_tenants)
    else:
        await connections[0].execute(FILL_JOBS, tag, args.claims)
    await connections[0].execute("ANALYZE")

    async def drain(connection: asyncpg.Connection) -> int:
        total = 0
        while taken := await claim(connection, args.claim_batch):
            total += taken
        return total

    started = time.perf_counter()
    claimed = sum(await asyncio.gather(*(drain(connection) for connection in connections)))
    elapsed = time.perf_counter() - started
    if claimed != args.claims:
        raise RuntimeError(f"claimed {claimed} of {args.claims} jobs")
    return claimed / elapsed


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --- main ----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="parpaing-bench-") as root:
        server = await asyncio.to_thread(LocalPostgres(Path(root) / "pgdata").start)
        try:
            await migrate(server.url)
            await _measure(server, args)
        finally:
            await asyncio.to_thread(server.stop, "immediate")


async def _measure(server: LocalPostgres, args: argparse.Namespace) -> None:
    if not args.only_claims:
        await _throughput_and_latency(server, args)
    if not args.claims:
        return
    print(
        f"claim: {args.rounds} rounds of {args.claims} jobs of {args.claim_tenants} tenant(s),"
        f" {args.claimers} claimers, {args.claim_batch} a claim"
    )
    if args.only_claims:
        await create_baseline_table(server.url)
    ratios = await claim_ratios(server.url, args)
    print(
        f"  ratio:   median {statistics.median(ratios):.2f}"
        f" (rounds {min(ratios):.2f} to {max(ratios):.2f})"
    )


async def _throughput_and_latency(server: LocalPostgres, args: argparse.Namespace) -> None:
    print(
        f"throughput: {args.rounds} rounds of {args.jobs} jobs, {args.clients} clients, "
        f"{args.towers} tower process(es) with MAX_CONCURRENT_JOBS={args.concurrency} each"
    )
    await create_baseline_table(server.url)
    async with towers(server.url, args.towers, args.concurrency) as base_urls:
        ratios = [await _round(server, base_urls, args, index) for index in range(args.rounds)]
        median = statistics.median(ratios)
        verdict = "ok" if median >= THROUGHPUT_TARGET else "BELOW TARGET"
        print(
            f"  ratio:   median {median:.2f} (rounds {min(ratios):.2f} to {max(ratios):.2f}), "
            f"target >= {THROUGHPUT_TARGET}: {verdict}"
        )
        latencies = await wait_latencies(base_urls[0], server.url, args.waits)
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    verdict = "ok" if p99 <= P99_TARGET_MS else "ABOVE TARGET"
    print(f"/wait wake-up latency over {args.waits} waits (COMMIT sent -> response):")
    print(f"  p50 {p50:.1f} ms, p99 {p99:.1f} ms, mean {statistics.fmean(latencies):.1f} ms")
    print(f"  target p99 <= {P99_TARGET_MS:g} ms: {verdict}")


async def _round(
    server: LocalPostgres, base_urls: list[str], args: argparse.Namespace, index: int
) -> float:
    print(f" round {index + 1}:")
    agent_id = f"bench-round-{index + 1}"
    jobs_per_second = await tower_throughput(
        base_urls, server.url, args.jobs, args.clients, agent_id
    )
    baseline = await pgbench_throughput(server, args.jobs, args.clients)
    print(f"  ratio:   {jobs_per_second / baseline:.2f}")
    return jobs_per_second / baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=16, help="MAX_CONCURRENT_JOBS")
    parser.add_argument("--towers", type=int, default=1, help="tower processes (replicas)")
    parser.add_argument("--rounds", type=int, default=3, help="tower/pgbench alternations")
    parser.add_argument("--waits", type=int, default=200)
    parser.add_argument("--claims", type=int, default=5000, help="jobs to claim (0: skip)")
    parser.add_argument("--claimers", type=int, default=2, help="claiming connections")
    parser.add_argument("--claim-batch", type=int, default=16, help="jobs a claim takes")
    parser.add_argument("--claim-tenants", type=int, default=1, help="tenants they belong to")
    parser.add_argument("--only-claims", action="store_true", help="measure the claim only")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
