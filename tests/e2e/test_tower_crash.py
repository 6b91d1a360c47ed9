"""A tower killed with SIGKILL while its job runs in a container: another replica requeues
or fails the job (per max_attempts), and no container is left behind.

Towers are real processes (tests/support/towers.py) on one database, with short leases
and a short reconcile interval so the survivor notices within seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.e2e.support import (
    container_exists,
    describe,
    isolated_network,
    poll_until,
    register_shell,
    running_container,
    socket_volume_name,
    submit,
    wait_terminal,
    worker_containers,
)
from tests.support.towers import TowerProcess, start_tower

pytestmark = pytest.mark.slow

LEASE_SECONDS = 2
# The longest a survivor may take: the lease running out, a reaper pass, a reconcile pass
# and a process start, with room for a loaded two-core machine.
RECOVERY_DEADLINE = 60.0


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


@pytest.fixture
async def towers(database_url: str, tmp_path: Path, network: str) -> AsyncIterator[list[Any]]:
    """Start towers with `await start(name)`; whatever is still alive is killed after."""
    started: list[TowerProcess] = []

    async def start(name: str) -> TowerProcess:
        tower = await start_tower(
            database_url,
            tmp_path,
            name,
            tower_runner="docker",
            worker_net=network,
            gateway_socket_volume=socket_volume_name(network),
            lease_seconds=LEASE_SECONDS,
            pool_size=0,
            pool_check_interval=1,
            poll_interval=0.2,
        )
        started.append(tower)
        return tower

    yield [start]
    for tower in started:
        if tower.process.poll() is None:
            tower.terminate()


async def _running_job(
    tower: TowerProcess, database_url: str, docker_client: docker.DockerClient, **fields: Any
) -> tuple[str, str]:
    """Submit `sleep 60` through `tower`; once its container runs: (job_id, container_id)."""
    async with httpx.AsyncClient(base_url=tower.base_url, timeout=30) as client:
        await register_shell(client)
        job_id = await submit(client, "sleep 60", **fields)
    return job_id, await running_container(database_url, job_id, docker_client)


async def _job(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


async def _removed(client: docker.DockerClient, container_id: str) -> bool:
    return not await asyncio.to_thread(container_exists, client, container_id)


async def _no_workers_left(client: docker.DockerClient, network: str) -> bool:
    return not await asyncio.to_thread(worker_containers, client, network)


async def test_job_of_a_killed_tower_is_failed_and_its_container_removed(
    database_url: str,
    network: str,
    towers: list[Any],
    worker_image: str,
    docker_client: docker.DockerClient,
) -> None:
    [start] = towers
    doomed = await start("doomed")
    job_id, container_id = await _running_job(doomed, database_url, docker_client, max_attempts=1)
    survivor = await start("survivor")
    doomed.kill()
    killed_at = time.monotonic()

    async with httpx.AsyncClient(base_url=survivor.base_url, timeout=30) as client:
        record = await wait_terminal(client, job_id, deadline=RECOVERY_DEADLINE)
        failed_after = time.monotonic() - killed_at
        assert record["status"] == "failed", describe(record)
        assert record["failure_reason"] == "tower_lost", describe(record)
        await poll_until(
            partial(_removed, docker_client, container_id),
            "the dead tower's container to be removed",
            RECOVERY_DEADLINE,
        )
        await poll_until(
            partial(_no_workers_left, docker_client, network), "no worker left", RECOVERY_DEADLINE
        )
        removed_after = time.monotonic() - killed_at
        assert (await client.get("/health")).status_code == 200
    print(f"failed {failed_after:.1f}s and container removed {removed_after:.1f}s after kill -9")


async def test_job_of_a_killed_tower_is_requeued_and_run_again(
    database_url: str,
    network: str,
    towers: list[Any],
    worker_image: str,
    docker_client: docker.DockerClient,
) -> None:
    [start] = towers
    doomed = await start("doomed")
    job_id, first_container = await _running_job(
        doomed, database_url, docker_client, max_attempts=2
    )
    survivor = await start("survivor")
    doomed.kill()

    async with httpx.AsyncClient(base_url=survivor.base_url, timeout=30) as client:

        async def second_attempt_running() -> dict[str, Any] | None:
            record = await _job(client, job_id)
            return record if (record["attempt"], record["status"]) == (2, "running") else None

        await poll_until(second_attempt_running, "the second attempt", RECOVERY_DEADLINE)
        await poll_until(
            partial(_removed, docker_client, first_container),
            "the first attempt's container to be removed",
            RECOVERY_DEADLINE,
        )
        second_container = await running_container(database_url, job_id, docker_client)
        assert second_container != first_container

        assert (await client.delete(f"/jobs/{job_id}")).status_code == 200
        record = await wait_terminal(client, job_id)
        assert record["status"] == "cancelled", describe(record)
        await poll_until(
            partial(_no_workers_left, docker_client, network), "no worker left", RECOVERY_DEADLINE
        )
