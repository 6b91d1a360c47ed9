"""WORKER_RUNTIME reaches Docker: with crun (Debian's, registered as a second runtime by
scripts/setup-docker) warm and job containers run under it, and a job completes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import docker
import pytest

from tests.e2e.support import (
    describe,
    docker_settings,
    isolated_network,
    running_container,
    shell_tower,
    submit,
    wait_pool_ready,
    wait_terminal,
)

RUNTIME = "crun"
# The job waits for a file the test creates once it has inspected the container, so the
# container is certainly running (and inspectable) when the runtime is read.
WAIT_FOR_GO = "until [ -e /tmp/go ]; do sleep 0.1; done\necho finished under $(cat /proc/1/comm)\n"


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


def runtime_of(client: docker.DockerClient, container_id: str) -> str:
    runtime: str = client.containers.get(container_id).attrs["HostConfig"]["Runtime"]
    return runtime


def let_go(client: docker.DockerClient, container_id: str) -> None:
    result = client.containers.get(container_id).exec_run(["touch", "/tmp/go"], user="1000")
    assert result.exit_code == 0, result.output


async def test_jobs_run_under_the_configured_runtime(
    database_url: str, network: str, worker_image: str, docker_client: docker.DockerClient
) -> None:
    runtimes = (await asyncio.to_thread(docker_client.info)).get("Runtimes", {})
    assert RUNTIME in runtimes, f"{RUNTIME} is not registered with Docker: run scripts/setup-docker"
    settings = docker_settings(database_url, network, pool_size=1, worker_runtime=RUNTIME)
    async with shell_tower(settings) as client:
        [warm] = await wait_pool_ready(database_url, 1)
        assert await asyncio.to_thread(runtime_of, docker_client, warm["container_id"]) == RUNTIME

        job_id = await submit(client, WAIT_FOR_GO)
        container_id = await running_container(database_url, job_id, docker_client)
        assert await asyncio.to_thread(runtime_of, docker_client, container_id) == RUNTIME
        await asyncio.to_thread(let_go, docker_client, container_id)
        record = await wait_terminal(client, job_id)
    assert record["status"] == "completed", describe(record)
    assert record["result"].startswith("finished under"), describe(record)
