"""Towers on two Docker hosts sharing one database (docs/operations.md, "More than one
Docker host"): jobs run on both, each host keeps its own warm pool, a job is adopted
only by a replica on its own host, and with one host's engine stopped the other runs
every job. /health and the metrics say which host a replica is on.

Host one is the machine's Docker daemon; host two a second engine of the test's own
(tests/support/second_docker.py), which only this test stops. Towers are real
processes (tests/support/towers.py) on one database.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.e2e.support import (
    describe,
    isolated_network,
    poll_until,
    register_shell,
    socket_volume_name,
    submit,
    wait_terminal,
)
from tests.support.second_docker import SecondDocker
from tests.support.towers import TowerProcess, connect, start_tower

pytestmark = pytest.mark.slow

LEASE_SECONDS = 2
DEADLINE = 90.0
Start = Callable[..., Awaitable[TowerProcess]]

# Where each job's container runs: its slot's host and container.
SLOT_OF_JOB = "SELECT docker_host, container_id FROM pool_slots WHERE job_id = $1"
READY_HOSTS = "SELECT DISTINCT docker_host FROM pool_slots WHERE status = 'ready'"
LEASE_OWNER = "SELECT lease_owner, attempt FROM jobs WHERE job_id = $1"


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


@pytest.fixture
async def towers(
    database_url: str, tmp_path: Path, network: str, engine: SecondDocker
) -> AsyncIterator[Start]:
    """`await start(name, second=bool)`: a tower on host one or two; all stopped after."""
    started: list[TowerProcess] = []

    async def start(name: str, second: bool = False) -> TowerProcess:
        where = {"docker_host": engine.host} if second else {}
        tower = await start_tower(
            database_url,
            tmp_path,
            name,
            tower_runner="docker",
            worker_net=network,
            gateway_socket_volume=socket_volume_name(network),
            lease_seconds=LEASE_SECONDS,
            pool_size=1,
            pool_check_interval=1,
            poll_interval=0.2,
            max_concurrent_jobs=2,
            **where,
        )
        started.append(tower)
        return tower

    yield start
    for tower in started:
        if tower.process.poll() is None:
            tower.terminate()
    if not engine.running:
        engine.start()


async def test_two_docker_hosts_share_one_queue(
    database_url: str, towers: Start, engine: SecondDocker, docker_client: docker.DockerClient
) -> None:
    one = await towers("one")
    two = await towers("two", second=True)
    host_one, host_two = await _docker_host(one), await _docker_host(two)
    hosts = {host_one, host_two}
    assert len(hosts) == 2, hosts  # /health names each replica's host, and they differ
    await poll_until(partial_ready_hosts(database_url, hosts), "a warm pool on each host")

    # Four jobs held open, at most two per tower: two run on each host.
    gates = [f"g{uuid.uuid4().hex[:8]}" for _ in range(4)]
    jobs = [await _submit(one, _gated(gate)) for gate in gates]
    slots = [await _slot_when_running(database_url, job_id) for job_id in jobs]
    assert sorted(host for host, _ in slots) == sorted([*hosts, *hosts]), slots

    # A second replica on host two; the first is killed: only host two's replica adopts.
    rescuer = await towers("rescuer", second=True)
    assert await _docker_host(rescuer) == host_two
    two.kill()
    on_two = [job for job, (host, _) in zip(jobs, slots, strict=True) if host == host_two]
    for job_id in on_two:
        await poll_until(_owned_by(database_url, job_id, "rescuer"), "adoption", DEADLINE)
    with contextlib.closing(engine.client()) as second_client:
        clients = {host_one: docker_client, host_two: second_client}
        for gate, (host, container_id) in zip(gates, slots, strict=True):
            await asyncio.to_thread(_open, clients[host], container_id, gate)
    async with httpx.AsyncClient(base_url=one.base_url, timeout=30) as client:
        for job_id in jobs:
            record = await wait_terminal(client, job_id, deadline=DEADLINE)
            assert (record["status"], record["attempt"]) == ("completed", 1), describe(record)
    assert "adopted by one" not in one.log()

    # Host two's engine stopped: host one runs every job.
    engine.stop()
    later = [await _submit(one, f"echo later {n}") for n in range(4)]
    async with httpx.AsyncClient(base_url=one.base_url, timeout=30) as client:
        for job_id in later:
            record = await wait_terminal(client, job_id, deadline=DEADLINE)
            assert (record["status"], record["attempt"]) == ("completed", 1), describe(record)
            assert record["ran_by"] == "one", describe(record)


def partial_ready_hosts(database_url: str, hosts: set[str]) -> Callable[[], Awaitable[bool]]:
    async def ready() -> bool:
        return {row["docker_host"] for row in await _fetch(database_url, READY_HOSTS)} >= hosts

    return ready


def _owned_by(database_url: str, job_id: str, owner: str) -> Callable[[], Awaitable[bool]]:
    async def owned() -> bool:
        [row] = await _fetch(database_url, LEASE_OWNER, job_id)
        return bool(row["lease_owner"] == owner and row["attempt"] == 1)

    return owned


async def _docker_host(tower: TowerProcess) -> str:
    """The Docker host /health names, and the metrics' tower_docker_host_info says too."""
    async with httpx.AsyncClient(base_url=tower.base_url, timeout=30) as client:
        host: str = (await client.get("/health")).json()["docker_host"]
        metrics = (await client.get("/metrics")).text
    assert f'tower_docker_host_info{{docker_host="{host}"}} 1.0' in metrics
    return host


async def _slot_when_running(database_url: str, job_id: str) -> tuple[str, str]:
    async def found() -> bool:
        rows = await _fetch(database_url, SLOT_OF_JOB, job_id)
        return bool(rows and rows[0]["container_id"])

    await poll_until(found, f"{job_id}'s container", DEADLINE)
    [row] = await _fetch(database_url, SLOT_OF_JOB, job_id)
    return row["docker_host"], row["container_id"]


async def _fetch(database_url: str, query: str, *args: Any) -> list[Any]:
    connection = await connect(database_url)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


async def _submit(tower: TowerProcess, prompt: str) -> str:
    async with httpx.AsyncClient(base_url=tower.base_url, timeout=30) as client:
        await register_shell(client)
        return await submit(client, prompt)


def _gated(name: str) -> str:
    """A shell job that waits for /tmp/<name> in its container, then says so."""
    return f"until [ -e /tmp/{name} ]; do sleep 0.05; done\necho {name} done\n"


def _open(client: docker.DockerClient, container_id: str, name: str) -> None:
    result = client.containers.get(container_id).exec_run(["touch", f"/tmp/{name}"])
    assert result.exit_code == 0, result.output
