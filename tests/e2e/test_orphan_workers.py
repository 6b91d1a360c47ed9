"""A deployment whose database is gone (the all-in-one state directory deleted, a test
database dropped) leaves warm workers behind; the next deployment started in the same
pool scope (WORKER_NET) removes them at its start, as containers with no row of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from tests.e2e.support import docker_settings, isolated_network, poll_until, serve
from tests.support.postgres import create_database
from tower.db.embedded import LocalPostgres

pytestmark = pytest.mark.slow

POOL_SIZE = 2


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


def _workers(client: docker.DockerClient, network: str) -> dict[str, str]:
    """Container id → state of the workers in this test's pool scope."""
    listed = client.api.containers(all=True, filters={"label": f"parpaing.pool={network}"})
    return {str(c["Id"]): str(c["State"]) for c in listed}


async def test_a_new_deployment_removes_the_idle_workers_of_one_whose_database_is_gone(
    pg_server: LocalPostgres,
    database_url: str,
    network: str,
    worker_image: str,
    docker_client: docker.DockerClient,
) -> None:
    first = docker_settings(database_url, network, pool_size=POOL_SIZE)

    async def warm(scope: str) -> Any:
        found = await asyncio.to_thread(_workers, docker_client, scope)
        running = [c for c, state in found.items() if state == "running"]
        return found if len(running) == POOL_SIZE else None

    async with serve(first):
        old = await poll_until(lambda: warm(network), "the first deployment's warm pool", 120)
    # Stopped: its idle workers stay for its next start. Its database is now "gone": the
    # next deployment starts on a fresh one, in the same scope.
    assert set(await asyncio.to_thread(_workers, docker_client, network)) == set(old)
    second = docker_settings(await create_database(pg_server), network, pool_size=POOL_SIZE)
    async with serve(second):
        new = await poll_until(lambda: warm(network), "the second deployment's warm pool", 120)
        assert not set(old) & set(new), "the old deployment's idle workers are still there"
        volumes = docker_client.api.volumes(filters={"label": f"parpaing.pool={network}"})
        assert len(volumes.get("Volumes") or []) == POOL_SIZE  # the new workers' only
