"""Live job output over SSE, across replicas: two tower processes with Docker runners.

A shell job prints a line every 100 ms, each stamped with the container's clock (the
host's: containers share its kernel). Clients on both replicas stream the job; the one
on the replica that does not run it must get every line within 500 ms of its printing
(a liveness bound, not a speed target), and a client that keeps dropping and resuming
with Last-Event-ID must get every line exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import docker
import httpx
import pytest

from tests.e2e.conftest import WORKER_IMAGE
from tests.e2e.support import (
    describe,
    isolated_network,
    poll_until,
    register_shell,
    socket_volume_name,
    submit,
    wait_terminal,
    worker_containers,
)
from tests.support.sse import Event, collect, only_events
from tests.support.towers import TowerProcess, start_tower

LINES = 30
SCRIPT = f"""\
sleep 1
for i in $(seq 1 {LINES}); do echo "line $i $(date +%s.%N)"; echo "err $i" >&2; sleep 0.1; done
"""
LATENCY_BOUND = 0.5
DEADLINE = 120.0


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


@pytest.fixture
async def towers(
    database_url: str, network: str, worker_image: str, tmp_path: Path
) -> AsyncIterator[list[TowerProcess]]:
    settings = {
        "tower_runner": "docker",
        "worker_net": network,
        "gateway_socket_volume": socket_volume_name(network),
        "worker_image": WORKER_IMAGE,
        "pool_size": 0,
        "poll_interval": 0.2,
    }
    started: list[TowerProcess] = []
    try:
        for name in ("events-a", "events-b"):
            started.append(await start_tower(database_url, tmp_path, name, **settings))
        yield started
    finally:
        for tower in started:
            tower.terminate()


async def shell_everywhere(clients: list[httpx.AsyncClient]) -> None:
    """Register the shell engine and profile once; wait until every replica knows them."""
    await register_shell(clients[0])

    async def known(client: httpx.AsyncClient) -> bool | None:
        engines = (await client.get("/engines")).json()["engines"]
        return any(engine["id"] == "shell" for engine in engines) or None

    for client in clients:
        await poll_until(lambda client=client: known(client), "the shell engine on a replica")


async def timed_stream(client: httpx.AsyncClient, job_id: str) -> list[tuple[float, Event]]:
    """The job's whole stream, each event with its arrival time (epoch seconds)."""
    arrivals = []
    async with client.stream("GET", f"/jobs/{job_id}/events") as reply:
        assert reply.status_code == 200
        async for event in only_events(reply):
            arrivals.append((time.time(), event))
    return arrivals


async def dropping_stream(client: httpx.AsyncClient, job_id: str) -> list[Event]:
    """The stream read three events per connection, resuming with Last-Event-ID."""
    received: list[Event] = []
    while not received or received[-1].data.get("status") not in ("completed", "failed"):
        headers = {"Last-Event-ID": str(received[-1].id)} if received else {}
        async with client.stream("GET", f"/jobs/{job_id}/events", headers=headers) as reply:
            count = 0
            async for event in only_events(reply):
                received.append(event)
                count += 1
                if count == 3:
                    break
    return received


def stdout_lines(events: list[Event]) -> list[str]:
    text = "".join(
        e.data["text"] for e in events if e.name == "log" and e.data["stream"] == "stdout"
    )
    return text.splitlines()


async def owner_of(database_url: str, job_id: str) -> str:
    async def owner() -> str | None:
        connection = await asyncpg.connect(database_url)
        try:
            found: str | None = await connection.fetchval(
                "SELECT lease_owner FROM jobs WHERE job_id = $1", job_id
            )
            return found
        finally:
            await connection.close()

    return await poll_until(owner, f"the replica running {job_id}")


async def test_a_replica_that_does_not_run_the_job_streams_its_lines_live(
    towers: list[TowerProcess],
    database_url: str,
    network: str,
    docker_client: docker.DockerClient,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=t.base_url, timeout=60))
            for t in towers
        ]
        await shell_everywhere(clients)
        job_id = await submit(clients[0], SCRIPT)
        async with asyncio.timeout(DEADLINE):
            timed = [asyncio.create_task(timed_stream(client, job_id)) for client in clients]
            dropping = [asyncio.create_task(dropping_stream(client, job_id)) for client in clients]
            owner = await owner_of(database_url, job_id)
            record = await wait_terminal(clients[0], job_id)
            streams = await asyncio.gather(*timed)
            resumed = await asyncio.gather(*dropping)

    assert record["status"] == "completed", describe(record)
    other = next(n for n, tower in enumerate(towers) if tower.tower_id != owner)
    arrivals = streams[other]
    latencies = []
    for arrived, event in arrivals:
        if event.name == "log" and event.data["stream"] == "stdout":
            for line in event.data["text"].splitlines():
                latencies.append(arrived - float(line.split()[2]))
    assert len(latencies) == LINES, [event for _, event in arrivals]
    assert max(latencies) < LATENCY_BOUND, sorted(latencies)

    expected = [f"line {n}" for n in range(1, LINES + 1)]
    for events in [[event for _, event in arrivals], *resumed]:
        assert [event.id for event in events] == list(range(1, len(events) + 1))
        assert [line.rsplit(" ", 1)[0] for line in stdout_lines(events)] == expected
        stderr = "".join(e.data["text"] for e in events if e.data.get("stream") == "stderr")
        assert stderr == "".join(f"err {n}\n" for n in range(1, LINES + 1))
        assert "parpaing-worker" not in "".join(e.data.get("text", "") for e in events)
        assert [e.data["status"] for e in events if e.name == "state"] == [
            "pending", "running", "completed",
        ]  # fmt: skip

    # The log outlives the container: once it is gone, a replay still has every line.
    async def container_gone() -> bool:
        return not worker_containers(docker_client, network)

    await poll_until(container_gone, "the job's container to be removed")
    async with httpx.AsyncClient(base_url=towers[other].base_url, timeout=60) as client:
        replay = await collect(client, f"/jobs/{job_id}/events")
    assert replay == [event for _, event in arrivals]
    print(f"line latency on the non-owner replica: max {max(latencies) * 1000:.0f} ms")
