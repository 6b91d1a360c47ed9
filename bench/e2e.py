"""End-to-end benchmark: dry-run job latency through real containers, warm and cold,
against a bare `docker run --rm`, and throughput with two tower replicas.

A benchmark, not a test: it prints figures and a target, and never fails on them.
Run from the repository root, with Docker up and the worker image built:
    .venv/bin/python bench/e2e.py [--runs 15] [--jobs 40]

1. Baseline: `docker run --rm WORKER_IMAGE true`, RUNS times (p50, p95).
2. Warm: a tower in this process with POOL_SIZE=2; RUNS dry-run jobs one after another,
   each submitted once the pool is full again; latency is POST /jobs sent -> the
   terminal record returned by GET /jobs/{id}/wait (p50, p95).
3. Cold: the same with POOL_SIZE=0, every job creating its container.
4. Throughput: two `parpaing serve` processes on one database, JOBS dry-run jobs
   submitted to both at once; jobs/min from the first submission to the last terminal.
Target: warm p50 <= 0.2 x the bare `docker run` p50 (issue 17).
"""

# ruff: noqa: E402  (sys.path is repaired below, before the imports that need it)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's directory heads sys.path; the repository root is needed.
HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import argparse
import asyncio
import contextlib
import logging
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import docker
import httpx
import uvicorn

from tower.app import create_app
from tower.db.embedded import LocalPostgres, free_port
from tower.db.migrate import migrate
from tower.settings import Settings

WARM_TARGET = 0.2  # issue 17 (0.5 before)
WARM_POOL = 2
DRY_RUN = {"agent_id": "bench", "engine": "claude-code", "prompt": "benchmark", "dry_run": True}
START_DEADLINE = 120.0
JOB_DEADLINE = 300.0

# Ready slots of the pool (the warm benchmark waits for a full pool before each job).
READY_SLOTS = "SELECT count(*) FROM pool_slots WHERE status = 'ready'"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(values: list[float]) -> str:
    p50, p95 = percentile(values, 0.50), percentile(values, 0.95)
    return f"p50 {p50 * 1000:7.0f} ms   p95 {p95 * 1000:7.0f} ms   (n={len(values)})"


# --- 1. the baseline -----------------------------------------------------------------------


def bare_docker_runs(image: str, runs: int) -> list[float]:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(["docker", "run", "--rm", image, "true"], check=True, capture_output=True)
        timings.append(time.perf_counter() - started)
    return timings


# --- 2 and 3. latency through a tower in this process ----------------------------------


@contextlib.asynccontextmanager
async def tower(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("tower exited during start-up")
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        await task


async def one_job(client: httpx.AsyncClient) -> float:
    """Seconds from sending POST /jobs to receiving the job's terminal record."""
    started = time.perf_counter()
    response = await client.post("/jobs", json=DRY_RUN)
    response.raise_for_status()
    job_id = response.json()["job_id"]
    record = await wait(client, job_id)
    elapsed = time.perf_counter() - started
    if record["status"] != "completed":
        raise RuntimeError(f"dry run {job_id} ended {record['status']}: {record['error']}")
    return elapsed


async def wait(client: httpx.AsyncClient, job_id: str) -> dict[str, object]:
    response = await client.get(
        f"/jobs/{job_id}/wait", params={"timeout": JOB_DEADLINE}, timeout=JOB_DEADLINE + 30
    )
    response.raise_for_status()
    record: dict[str, object] = response.json()
    return record


async def until_pool_full(database_url: str, size: int) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + START_DEADLINE
        while await connection.fetchval(READY_SLOTS) < size:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the pool did not reach {size} ready slots")
            await asyncio.sleep(0.05)
    finally:
        await connection.close()


async def latencies(settings: Settings, runs: int) -> list[float]:
    timings = []
    async with tower(settings) as client:
        await one_job(client)  # the first job also warms caches: not counted
        for _ in range(runs):
            if settings.pool_min:
                await until_pool_full(settings.database_url, settings.pool_min)
            timings.append(await one_job(client))
        print("  phases (mean, ms):", await phase_means(client))
    return timings


PHASE = re.compile(r'^tower_job_phase_seconds_(sum|count)\{phase="(\w+)"\} (\S+)$', re.M)


async def phase_means(client: httpx.AsyncClient) -> str:
    """tower_job_phase_seconds's mean per phase so far (docs/metrics.md, "Job phases")."""
    found: dict[str, dict[str, float]] = {}
    for kind, phase, value in PHASE.findall((await client.get("/metrics")).text):
        found.setdefault(phase, {})[kind] = float(value)
    means = {phase: v["sum"] / v["count"] for phase, v in found.items() if v.get("count")}
    return ", ".join(f"{phase} {seconds * 1000:.1f}" for phase, seconds in means.items())


# --- 4. throughput with two replicas ---------------------------------------------------


@contextlib.contextmanager
def replicas(database_url: str, network: str, workdir: Path, count: int = 2) -> Iterator[list[str]]:
    """`count` `parpaing serve` processes on one database; yields their base URLs."""
    ports = [free_port() for _ in range(count)]
    processes = [
        spawn(database_url, network, port, workdir / f"replica-{port}.log") for port in ports
    ]
    try:
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)


def spawn(database_url: str, network: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "TOWER_RUNNER": "docker",
        "WORKER_NET": network,
        "GATEWAY_SOCKET_VOLUME": f"{network}-socket",
        "POOL_SIZE": str(WARM_POOL),
        "POOL_MAX": str(WARM_POOL),
        "TOWER_API_KEY": "",
        # Dry runs call no provider: no gateway to start (and none to share on the daemon).
        "GATEWAY_MANAGED": "false",
    }
    argv = [sys.executable, "-m", "tower.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as output:
        return subprocess.Popen(argv, cwd=HERE.parent, env=env, stdout=output, stderr=output)


async def until_serving(urls: list[str]) -> None:
    deadline = time.monotonic() + START_DEADLINE
    async with httpx.AsyncClient(timeout=5) as client:
        for url in urls:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{url}/openapi.json")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {url} did not start")
                await asyncio.sleep(0.2)


async def throughput(urls: list[str], jobs: int) -> float:
    """Jobs per minute: JOBS dry runs spread over the replicas, all submitted at once."""
    clients = [httpx.AsyncClient(base_url=url, timeout=60) for url in urls]
    try:
        started = time.perf_counter()
        await asyncio.gather(*(one_job(clients[n % len(clients)]) for n in range(jobs)))
        return jobs / (time.perf_counter() - started) * 60
    finally:
        for client in clients:
            await client.aclose()


# --- main ----------------------------------------------------------------------------------


def remove_bench_workers(network: str, attempts: int = 5) -> None:
    """Remove the run's workers, volumes and network. A worker still being created when
    the list was read keeps the network busy: then the sweep runs again."""
    client = docker.from_env()
    try:
        for attempt in range(attempts):
            _remove_workers_and_volumes(client, network)
            try:
                client.networks.get(network).remove()
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError:
                if attempt == attempts - 1:
                    raise
                time.sleep(1)
    finally:
        client.close()


def _remove_workers_and_volumes(client: docker.DockerClient, network: str) -> None:
    label = {"label": f"parpaing.pool={network}"}
    # Workers have no network: they are found by their pool label (WORKER_NET).
    for container in client.containers.list(all=True, filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    # Warm containers' bundle volumes outlive their containers: remove them by pool label.
    for volume in client.volumes.list(filters=label):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            volume.remove(force=True)
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        client.volumes.get(f"{network}-socket").remove(force=True)


async def measure(server: LocalPostgres, workdir: Path, args: argparse.Namespace) -> None:
    image = Settings().worker_image
    bare = await asyncio.to_thread(bare_docker_runs, image, args.runs)
    print(f"bare `docker run --rm {image} true`:   {summary(bare)}")

    network = f"parpaing-bench-{uuid.uuid4().hex[:8]}"
    try:
        warm = await latencies(settings(server, "warm", network, WARM_POOL), args.runs)
        print(f"dry run, warm pool (POOL_SIZE={WARM_POOL}):  {summary(warm)}")
        cold = await latencies(settings(server, "cold", network, 0), args.runs)
        print(f"dry run, cold (POOL_SIZE=0):       {summary(cold)}")
        url = await database(server, "replicas")
        with replicas(url, network, workdir) as urls:
            await until_serving(urls)
            per_minute = await throughput(urls, args.jobs)
        print(f"throughput, 2 replicas, {args.jobs} dry runs: {per_minute:.0f} jobs/min")
    finally:
        await asyncio.to_thread(remove_bench_workers, network)

    ratio = statistics.median(warm) / statistics.median(bare)
    verdict = "ok" if ratio <= WARM_TARGET else "ABOVE TARGET"
    print(f"warm p50 / bare docker run p50 = {ratio:.2f} (target <= {WARM_TARGET}) {verdict}")


def settings(server: LocalPostgres, name: str, network: str, pool_size: int) -> Settings:
    url = server.url.rsplit("/", 1)[0] + f"/{name}"
    return Settings(
        database_url=url,
        tower_runner="docker",
        worker_net=network,
        gateway_socket_volume=f"{network}-socket",
        pool_size=pool_size,
        # A fixed pool: cold stays cold (an elastic one would grow to the jobs' demand).
        pool_max=pool_size,
        gateway_managed=False,
    )


async def database(server: LocalPostgres, name: str) -> str:
    admin = await asyncpg.connect(server.url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    url = server.url.rsplit("/", 1)[0] + f"/{name}"
    await migrate(url)
    return url


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="parpaing-bench-") as root:
        server = await asyncio.to_thread(LocalPostgres(Path(root) / "pgdata").start)
        try:
            for name in ("warm", "cold"):
                await database(server, name)
            await measure(server, Path(root), args)
        finally:
            await asyncio.to_thread(server.stop, "immediate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="latency samples per case")
    parser.add_argument("--jobs", type=int, default=40, help="jobs for the throughput run")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
