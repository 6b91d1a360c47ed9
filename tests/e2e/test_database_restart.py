"""PostgreSQL stopped for two leases while jobs run in real containers, then started: every
job completes, on its first attempt, whether it ended during the outage (its outcome
waits for the database) or after it (its lease renewed on reconnect, nobody reaping it).

Two tower processes share a PostgreSQL of this test's own (so it can be stopped); each
job waits for a file the test creates in its container (`docker exec`), so the test
decides when it ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import asyncpg
import docker
import httpx
import pytest
from docker.errors import APIError, NotFound

from tests.e2e.support import (
    describe,
    isolated_network,
    poll_until,
    register_shell,
    running_container,
    socket_volume_name,
    submit,
    wait_terminal,
)
from tests.support.towers import TowerProcess, start_tower
from tower.db.embedded import LocalPostgres

pytestmark = pytest.mark.slow

LEASE_SECONDS = 3
# The job ends once its go file exists, leaving a file that says so.
SCRIPT = 'while [ ! -e /tmp/go ]; do sleep 0.1; done\necho "done on $HOSTNAME"\ntouch /tmp/ended\n'


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LocalPostgres]:
    # Its own server: stopping it troubles no other test.
    server = await asyncio.to_thread(LocalPostgres(tmp_path / "pgdata").start)
    yield server
    await asyncio.to_thread(server.stop, "immediate")


@pytest.fixture
async def towers(
    server: LocalPostgres, tmp_path: Path, network: str, worker_image: str
) -> AsyncIterator[list[TowerProcess]]:
    started = []
    try:
        for name in ("first", "second"):
            started.append(
                await start_tower(
                    server.url,
                    tmp_path,
                    name,
                    tower_runner="docker",
                    worker_net=network,
                    worker_image=worker_image,
                    gateway_socket_volume=socket_volume_name(network),
                    lease_seconds=LEASE_SECONDS,
                    pool_size=0,
                    poll_interval=0.2,
                    max_concurrent_jobs=2,
                )
            )
        yield started
    finally:
        for tower in started:
            await asyncio.to_thread(tower.terminate)


async def _exec(client: docker.DockerClient, container_id: str, command: str) -> int:
    container = await asyncio.to_thread(client.containers.get, container_id)
    result = await asyncio.to_thread(container.exec_run, ["sh", "-c", command])
    return int(result.exit_code)


async def _ended(client: docker.DockerClient, container_id: str) -> bool:
    """The job's script ended: it said so, or tower already removed its container."""
    try:
        return await _exec(client, container_id, "test -e /tmp/ended") == 0
    except (NotFound, APIError):
        return True  # gone, or no longer running: tower collected it


async def _uptime(url: str) -> float:
    connection = await asyncpg.connect(url)
    try:
        return float(
            await connection.fetchval(
                "SELECT extract(epoch FROM now() - pg_postmaster_start_time())"
            )
        )
    finally:
        await connection.close()


async def test_every_job_completes_through_a_database_restart(
    server: LocalPostgres,
    towers: list[TowerProcess],
    docker_client: docker.DockerClient,
) -> None:
    first = towers[0]
    async with httpx.AsyncClient(base_url=first.base_url, timeout=60) as client:
        await register_shell(client)
        jobs = [await submit(client, SCRIPT) for _ in range(4)]
        containers = {
            job_id: await running_container(server.url, job_id, docker_client) for job_id in jobs
        }
        during, after = jobs[:2], jobs[2:]

        await asyncio.to_thread(server.stop, "fast")
        stopped_at = time.monotonic()
        for job_id in during:
            await _exec(docker_client, containers[job_id], "touch /tmp/go")
        for job_id in during:
            await poll_until(
                partial(_ended, docker_client, containers[job_id]),
                f"{job_id} to end during the outage",
            )
        # The outage lasts two leases: every lease lapses while nobody can renew it.
        await asyncio.sleep(max(0.0, stopped_at + 2 * LEASE_SECONDS - time.monotonic()))
        await asyncio.to_thread(server.start)

        # Owners had their chance to renew, and reapers theirs to reap (two leases up).
        async def settled() -> bool:
            return await _uptime(server.url) > 2 * LEASE_SECONDS

        await poll_until(settled, "the database up for two leases")
        for job_id in after:
            await _exec(docker_client, containers[job_id], "touch /tmp/go")
        records = [await wait_terminal(client, job_id) for job_id in jobs]

    for record in records:
        assert record["status"] == "completed", describe(record)
        assert record["attempt"] == 1, describe(record)
        assert "done on" in (record["result"] or ""), describe(record)
    assert not any("lease expired" in tower.log() for tower in towers)
