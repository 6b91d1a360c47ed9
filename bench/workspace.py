"""Workspace benchmark: 100 MB in and out of a job, against `docker cp` of the same bytes.

A benchmark, not a test: it prints figures and a target, and never fails on them.
Run from the repository root, with Docker up and the worker image built:
    .venv/bin/python bench/workspace.py [--mb 100] [--rounds 3]

Each round, in one run on one machine:
1. Baseline: `docker cp` of the file into a created (not started) worker container, then
   `docker cp` of it back out: the bytes in and out through Docker alone.
2. Parpaing: POST /uploads of the file (streamed), a job naming it as an input whose
   engine copies it to a new file in /workspace, then GET /jobs/{id}/artifacts/<file>
   streamed to disk: upload -> job -> artifact download, end to end.
3. PostgreSQL alone: the payload written into a scratch table like upload_chunks, as
   tower writes a file (tower/db/chunks.py: COPY of 8000-byte rows, one transaction),
   and read back, twice (the upload and the artifact are each stored once and read
   once). No path that keeps the bytes in PostgreSQL this way can beat it, so it bounds
   the ratio: baseline seconds / these seconds is the best one possible.
The ratio is baseline seconds / Parpaing seconds (throughput, so higher is better), with
the median of the rounds reported. Target: >= 0.5.
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
import hashlib
import logging
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from typing import BinaryIO

import asyncpg
import httpx

from bench.burst import Phases, report_phases
from bench.e2e import database, remove_bench_workers, replicas, until_serving
from tower.db import chunks
from tower.db.embedded import LocalPostgres
from tower.settings import Settings

TARGET = 0.5
MiB = 1 << 20
ENGINE = """\
id = "shell"
name = "Shell"
binary = "bash"
args = ["-s"]
output = "text"

[prompt]
via = "stdin"
"""
PROFILE = 'name = "shell"\nengine = "shell"\n'
COPY = "cp /workspace/in/payload.bin /workspace/out.bin"


def make_payload(directory: Path, size_mb: int) -> Path:
    path = directory / "payload.bin"
    with path.open("wb") as file:
        for _ in range(size_mb):
            file.write(os.urandom(MiB))
    return path


def docker_cp_round(image: str, payload: Path, scratch: Path) -> float:
    """Seconds to copy `payload` into a fresh worker container and back out."""
    created = subprocess.run(
        ["docker", "create", image, "true"], check=True, capture_output=True, text=True
    )
    container = created.stdout.strip()
    try:
        started = time.perf_counter()
        subprocess.run(["docker", "cp", str(payload), f"{container}:/tmp/payload.bin"], check=True)
        subprocess.run(
            ["docker", "cp", f"{container}:/tmp/payload.bin", str(scratch / "back.bin")],
            check=True,
        )
        return time.perf_counter() - started
    finally:
        subprocess.run(["docker", "rm", "-f", container], check=True, capture_output=True)


async def parpaing_round(client: httpx.AsyncClient, payload: Path, scratch: Path) -> float:
    """Seconds for upload -> job -> artifact download; checks the bytes came back whole."""
    started = time.perf_counter()
    with payload.open("rb") as body:
        uploaded = await client.post(
            "/uploads?filename=payload.bin",
            content=_chunks(body),
            headers={"content-type": "application/octet-stream"},
        )
    uploaded.raise_for_status()
    after_upload = time.perf_counter()
    job: dict[str, object] = {
        "agent_id": "bench",
        "engine": "shell",
        "profile": "shell",
        "prompt": COPY,
    }
    job["inputs"] = [{"upload": uploaded.json()["upload_id"], "path": "in"}]
    submitted = await client.post("/jobs", json=job)
    submitted.raise_for_status()
    job_id = submitted.json()["job_id"]
    waited = await client.get(f"/jobs/{job_id}/wait", params={"timeout": 600}, timeout=630)
    record = waited.json()
    if record["status"] != "completed":
        raise RuntimeError(f"job {job_id} ended {record['status']}: {record['error']}")
    after_job = time.perf_counter()
    target = scratch / "out.bin"
    async with client.stream("GET", f"/jobs/{job_id}/artifacts/out.bin") as answer:
        answer.raise_for_status()
        with target.open("wb") as file:
            async for chunk in answer.aiter_bytes(MiB):
                file.write(chunk)
    elapsed = time.perf_counter() - started
    if _digest(target) != _digest(payload):
        raise RuntimeError("the artifact is not the uploaded bytes")
    print(
        f"    upload {after_upload - started:5.2f} s, job {after_job - after_upload:5.2f} s,"
        f" download {started + elapsed - after_job:5.2f} s"
    )
    return elapsed


async def postgres_floor(url: str, payload: Path) -> float:
    """Seconds to store the payload's bytes in PostgreSQL and read them back, twice, the
    way tower keeps a file (tower/db/chunks.py), in a scratch table like theirs."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        await pool.execute(FLOOR_TABLE)
        started = time.perf_counter()
        for copy in range(2):
            await _store_and_read(pool, copy, payload)
        return time.perf_counter() - started
    finally:
        await pool.execute("DROP TABLE bench_floor")
        await pool.close()


FLOOR_TABLE = """
CREATE TABLE IF NOT EXISTS bench_floor (copy int, seq int, data bytea, PRIMARY KEY (copy, seq));
ALTER TABLE bench_floor ALTER data SET STORAGE EXTERNAL;
ALTER TABLE bench_floor SET (toast_tuple_target = 8160);
"""
FLOOR_CHUNKS = chunks.ChunkTable(
    table="bench_floor",
    columns=("copy", "seq", "data"),
    select_from="SELECT data FROM bench_floor WHERE copy = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
    first_size="SELECT octet_length(data) FROM bench_floor WHERE copy = $1 AND seq = 0",
)


async def _store_and_read(pool: asyncpg.Pool, copy: int, payload: Path) -> None:
    with payload.open("rb") as body:
        async with pool.acquire() as connection, connection.transaction():
            await chunks.copy_in(connection, FLOOR_CHUNKS, copy, body.read)
    async for _ in chunks.batches_from(pool, FLOOR_CHUNKS, copy, 0):
        pass


async def _chunks(body: BinaryIO) -> AsyncIterator[bytes]:
    while chunk := body.read(MiB):
        yield chunk


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


async def measure(server: LocalPostgres, root: Path, args: argparse.Namespace) -> None:
    payload = make_payload(root, args.mb)
    network = f"parpaing-bench-{uuid.uuid4().hex[:8]}"
    url = await database(server, "workspace")
    image = Settings().worker_image
    baseline, ours, floor = [], [], []
    try:
        # Tower in its own process, as docker cp's daemon is: the client's reading,
        # hashing and writing of the payload must not share tower's event loop.
        with replicas(url, network, root, count=1) as (base_url,):
            await until_serving([base_url])
            async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
                await configure(client)
                await parpaing_round(client, payload, root)  # warms caches and the pool
                before = await Phases.read(client)
                for _ in range(args.rounds):
                    baseline.append(await asyncio.to_thread(docker_cp_round, image, payload, root))
                    ours.append(await parpaing_round(client, payload, root))
                    floor.append(await postgres_floor(url, payload))
                phases = (await Phases.read(client)).since(before)
    finally:
        await asyncio.to_thread(remove_bench_workers, network)
    report(args.mb, baseline, ours)
    report_floor(baseline, floor)
    # Where the job's part went (docs/metrics.md, "Job phases"): `fill` and `remove` are
    # the warm pool's, beside the job rather than on its path.
    report_phases("the job's phases on tower (mean)", phases)


async def configure(client: httpx.AsyncClient) -> None:
    for path, content in (("engine/shell", ENGINE), ("profile/shell", PROFILE)):
        (await client.put(f"/configs/{path}", json={"content": content})).raise_for_status()


def report_floor(baseline: list[float], floor: list[float]) -> None:
    ceilings = [base / alone for base, alone in zip(baseline, floor, strict=True)]
    print(
        f"  PostgreSQL alone (store + read the bytes twice): {statistics.median(floor):.2f} s;"
        f" the best ratio any PostgreSQL-backed path could reach: {statistics.median(ceilings):.2f}"
    )


def report(size_mb: int, baseline: list[float], ours: list[float]) -> None:
    ratios = [base / mine for base, mine in zip(baseline, ours, strict=True)]
    print(f"\n{size_mb} MB in and out, {len(ours)} rounds")
    for base, mine, ratio in zip(baseline, ours, ratios, strict=True):
        print(
            f"  docker cp in+out {base:6.2f} s   upload->job->download {mine:6.2f} s   {ratio:.2f}"
        )
    median = statistics.median(ratios)
    verdict = "meets" if median >= TARGET else "misses"
    print(
        f"  median ratio {median:.2f} (docker cp seconds / Parpaing seconds): {verdict} "
        f"the target >= {TARGET}"
    )


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="parpaing-bench-") as root:
        server = await asyncio.to_thread(LocalPostgres(Path(root) / "pgdata").start)
        try:
            await measure(server, Path(root), args)
        finally:
            await asyncio.to_thread(server.stop, "immediate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="the payload's size in MiB")
    parser.add_argument("--rounds", type=int, default=3)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
