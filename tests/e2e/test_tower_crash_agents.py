"""Real agents outlive their tower: 20 trials of `kill -9` of the tower running Claude Code
jobs (the real CLI in the real worker image, through the real gateway, against the
scripted fake LLM), each job finished by the replica that adopts it, on its first and
only attempt (MAX_ATTEMPTS=1), with each agent session seen once by the fake LLM.

One stack for all trials: the fake LLM and the gateway stay; towers are real processes
(tests/support/towers.py) on one database. In each trial the only live tower claims the
trial's jobs, a new tower starts, the first is killed, and the new one adopts them. Each
job's agent runs a Bash tool call that waits for a file the test creates in its container
(`docker exec`) once the job is adopted, so every kill lands mid-job, whatever the
machine's speed.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.e2e.gateway import (
    REAL_ANTHROPIC_KEY,
    GatewayNames,
    egress_host_address,
    gateway_names,
)
from tests.e2e.support import (
    describe,
    isolated_network,
    poll_until,
    running_container,
    wait_terminal,
)
from tests.support.fake_llm import FakeLLM, text, tool
from tests.support.towers import TowerProcess, connect, start_tower

pytestmark = pytest.mark.slow

TRIALS = int(os.environ.get("PARPAING_CRASH_TRIALS", "20"))
JOBS_PER_TRIAL = 2
LEASE_SECONDS = 2
DEADLINE = 120.0
GATE = "/tmp/parpaing-go"
WAIT_FOR_GATE = f"until [ -e {GATE} ]; do sleep 0.1; done; echo released"


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


@pytest.fixture
def names(docker_client: docker.DockerClient) -> Iterator[GatewayNames]:
    with gateway_names(docker_client) as found:
        yield found


@pytest.fixture
def fake(docker_client: docker.DockerClient, names: GatewayNames) -> Iterator[FakeLLM]:
    host = egress_host_address(docker_client, names)
    script = [tool("Bash", command=WAIT_FOR_GATE, description="wait"), text("finished")]
    with FakeLLM(script, host=host) as server:
        yield server


@pytest.fixture
async def towers(
    database_url: str,
    tmp_path: Path,
    network: str,
    names: GatewayNames,
    fake: FakeLLM,
    gateway_image: str,
    worker_image: str,
) -> AsyncIterator[list[Any]]:
    """`await start(name)` starts a tower running the gateway; all are stopped after."""
    started: list[TowerProcess] = []
    settings: dict[str, float | str] = {
        "tower_runner": "docker",
        "worker_net": network,
        "worker_image": worker_image,
        "gateway_managed": "true",
        "gateway_url": names.url,
        "gateway_image": gateway_image,
        "gateway_egress_net": names.egress_net,
        "gateway_auth_socket": f"{names.socket_dir}/auth.sock",
        "gateway_socket_volume": names.socket_volume,
        "gateway_auth_cache_seconds": 1,
        "egress_managed": "false",  # the proxy would follow GATEWAY_MANAGED
        "anthropic_api_key": REAL_ANTHROPIC_KEY,
        "anthropic_upstream": fake.url,
        "lease_seconds": LEASE_SECONDS,
        "max_attempts": 1,
        "pool_size": JOBS_PER_TRIAL,
        "pool_check_interval": 1,
        "poll_interval": 0.2,
    }

    async def start(name: str) -> TowerProcess:
        tower = await start_tower(database_url, tmp_path, name, **settings)
        started.append(tower)
        return tower

    yield [start]
    for tower in started:
        if tower.process.poll() is None:
            tower.terminate()


async def _submit(tower: TowerProcess, marker: str) -> str:
    body = {"agent_id": "e2e", "engine": "claude-code", "prompt": f"Wait, then answer. {marker}"}
    async with httpx.AsyncClient(base_url=tower.base_url, timeout=30) as client:
        response = await client.post("/jobs", json={**body, "max_attempts": 1})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def _turns(fake: FakeLLM, marker: str) -> list[int]:
    """The script turns the fake answered for the session whose prompt holds `marker`."""
    calls = [c for c in fake.model_calls() if not c.side]
    return sorted(c.turn or 0 for c in calls if marker in json.dumps(c.body.get("messages")))


async def _owner(database_url: str, job_id: str) -> str | None:
    connection = await connect(database_url)
    try:
        owner: str | None = await connection.fetchval(
            "SELECT lease_owner FROM jobs WHERE job_id = $1", job_id
        )
    finally:
        await connection.close()
    return owner


def _open_gate(client: docker.DockerClient, container_id: str) -> None:
    result = client.containers.get(container_id).exec_run(["touch", GATE])
    assert result.exit_code == 0, result.output


async def test_agent_jobs_survive_twenty_kills_of_their_tower(
    database_url: str,
    towers: list[Any],
    fake: FakeLLM,
    docker_client: docker.DockerClient,
) -> None:
    [start] = towers
    current = await start("tower-0")
    began = time.monotonic()
    for trial in range(TRIALS):
        markers = [f"trial-{trial}-job-{n}-marker" for n in range(JOBS_PER_TRIAL)]
        jobs = {marker: await _submit(current, marker) for marker in markers}
        containers = {
            marker: await running_container(database_url, job_id, docker_client)
            for marker, job_id in jobs.items()
        }
        # The next tower starts while the agents start; none is left for it to claim.
        following = asyncio.ensure_future(start(f"tower-{trial + 1}"))
        for marker in markers:

            async def asked(marker: str = marker) -> bool:
                return _turns(fake, marker) == [0]

            await poll_until(asked, f"{marker}'s agent at its tool call", DEADLINE)
        successor = await following
        current.kill()

        for marker, job_id in jobs.items():

            async def adopted(job_id: str = job_id, owner: str = successor.tower_id) -> bool:
                return await _owner(database_url, job_id) == owner

            await poll_until(adopted, f"{job_id} adopted", DEADLINE)
            await asyncio.to_thread(_open_gate, docker_client, containers[marker])
        async with httpx.AsyncClient(base_url=successor.base_url, timeout=30) as client:
            for marker, job_id in jobs.items():
                record = await wait_terminal(client, job_id, DEADLINE)
                assert record["status"] == "completed", describe(record)
                assert (record["attempt"], record["result"]) == (1, "finished"), describe(record)
                # One session per job: its two turns, each asked once (no rerun).
                assert _turns(fake, marker) == [0, 1], marker
        current = successor
    took = time.monotonic() - began
    print(f"{TRIALS} trials of {JOBS_PER_TRIAL} agent jobs, kill -9 each: {took:.0f}s")
