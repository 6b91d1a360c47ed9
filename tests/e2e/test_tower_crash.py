"""A tower killed with SIGKILL while its jobs run in containers: another replica on the
same Docker host adopts them and finishes them from their containers (the log not
repeated, the attempt not counted twice); a job whose container is gone is failed or
requeued (per max_attempts), and no container is left behind.

Towers are real processes (tests/support/towers.py) on one database, with short leases
and a short reconcile interval so the survivor notices within seconds. Jobs wait for a
file the test creates in their container (`docker exec`), so what has happened when
(the kill, the worker's end, the adoption) is the test's to decide, not a timer's.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
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
from tests.support.towers import TowerProcess, connect, start_tower

pytestmark = pytest.mark.slow

LEASE_SECONDS = 2
LATE_ARTIFACT = 4 * 1024 * 1024
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


# Stored log chunks of a job, in order.
LOG_TEXT = """
SELECT data ->> 'stream' AS stream, data ->> 'text' AS text FROM job_events
WHERE job_id = $1 AND kind = 'log' ORDER BY seq
"""


def _gated(name: str, before: list[str], after: list[str], result: str, then: str = "") -> str:
    """A shell job printing `before`, waiting for /tmp/<name> in its container, then
    running `then`, printing `after` and `result` last (its result is its whole stdout)."""
    lines = [f"echo {line}" for line in before]
    lines += [f"until [ -e /tmp/{name} ]; do sleep 0.05; done", then]
    lines += [f"echo {line}" for line in [*after, result]]
    return "\n".join(lines) + "\n"


async def _submit(tower: TowerProcess, prompt: str, **fields: Any) -> str:
    async with httpx.AsyncClient(base_url=tower.base_url, timeout=30) as client:
        await register_shell(client)
        return await submit(client, prompt, **fields)


async def _log(database_url: str, job_id: str) -> str:
    connection = await connect(database_url)
    try:
        rows = await connection.fetch(LOG_TEXT, job_id)
    finally:
        await connection.close()
    return "".join(row["text"] for row in rows if row["stream"] == "stdout")


async def _job_row(database_url: str, job_id: str) -> dict[str, Any]:
    connection = await connect(database_url)
    try:
        row = await connection.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id)
    finally:
        await connection.close()
    return dict(row)


def _open(client: docker.DockerClient, container_id: str, name: str) -> None:
    """Let a gated job go on (see _gated)."""
    result = client.containers.get(container_id).exec_run(["touch", f"/tmp/{name}"])
    assert result.exit_code == 0, result.output


def _worker_done(client: docker.DockerClient, container_id: str) -> bool:
    logs: bytes = client.containers.get(container_id).logs(stdout=True, stderr=False)
    return b"parpaing-worker done" in logs


async def test_jobs_of_a_killed_tower_are_adopted_by_a_replica_on_their_host(
    database_url: str,
    network: str,
    towers: list[Any],
    worker_image: str,
    docker_client: docker.DockerClient,
) -> None:
    """Two jobs of the killed tower: one whose worker ended while no tower followed it,
    one still running when adopted. Both complete on their first attempt, from their
    containers, with each line of their output stored once. The ended one's artifact,
    larger than the 2 MB Docker keeps of a worker's log, was left in its volume: the
    adopter copies it from there."""
    [start] = towers
    doomed = await start("doomed")
    ended, running = f"e{uuid.uuid4().hex[:6]}", f"r{uuid.uuid4().hex[:6]}"
    late = f"head -c {LATE_ARTIFACT} /dev/urandom > /workspace/late.bin"
    ended_id = await _submit(doomed, _gated(ended, ["e-1", "e-2"], ["e-3"], "e-result", late))
    running_id = await _submit(doomed, _gated(running, ["r-1", "r-2"], ["r-3", "r-4"], "r-result"))
    containers = {}
    for job_id, last in ((ended_id, "e-2"), (running_id, "r-2")):
        containers[job_id] = await running_container(database_url, job_id, docker_client)

        async def stored(job_id: str = job_id, last: str = last) -> bool:
            return last in await _log(database_url, job_id)

        await poll_until(stored, f"{job_id}'s first lines stored")
    doomed.kill()

    # One worker ends with no tower following it; only then may anyone adopt.
    await asyncio.to_thread(_open, docker_client, containers[ended_id], ended)
    await poll_until(
        partial(asyncio.to_thread, _worker_done, docker_client, containers[ended_id]),
        "the worker's end",
    )
    survivor = await start("survivor")

    async def adopted() -> bool:
        row = await _job_row(database_url, running_id)
        return bool(row["lease_owner"] == "survivor")

    await poll_until(adopted, "the running job adopted", RECOVERY_DEADLINE)
    await asyncio.to_thread(_open, docker_client, containers[running_id], running)

    async with httpx.AsyncClient(base_url=survivor.base_url, timeout=30) as client:
        expected = {ended_id: "e-1 e-2 e-3 e-result", running_id: "r-1 r-2 r-3 r-4 r-result"}
        for job_id, lines in expected.items():
            record = await wait_terminal(client, job_id, deadline=RECOVERY_DEADLINE)
            assert record["status"] == "completed", describe(record)
            assert record["attempt"] == 1
            assert record["result"].split() == lines.split(), describe(record)
            # Each line once: what was stored before the kill is not stored again.
            assert (await _log(database_url, job_id)).split() == lines.split()
        listed = (await client.get(f"/jobs/{ended_id}/artifacts")).json()["files"]
        late_bin = (await client.get(f"/jobs/{ended_id}/artifacts/late.bin")).content
        for container_id in containers.values():
            await poll_until(partial(_removed, docker_client, container_id), "its removal")
        assert "adopted by survivor" in survivor.log()
    assert [(entry["path"], entry["size"]) for entry in listed] == [("late.bin", LATE_ARTIFACT)]
    assert hashlib.sha256(late_bin).hexdigest() == listed[0]["sha256"]


async def _running_job(
    tower: TowerProcess, database_url: str, docker_client: docker.DockerClient, **fields: Any
) -> tuple[str, str]:
    """Submit `sleep 60` through `tower`; once its container runs: (job_id, container_id)."""
    async with httpx.AsyncClient(base_url=tower.base_url, timeout=30) as client:
        await register_shell(client)
        job_id = await submit(client, "sleep 60", **fields)
    return job_id, await running_container(database_url, job_id, docker_client)


def _remove(client: docker.DockerClient, container_id: str) -> None:
    client.containers.get(container_id).remove(force=True)


async def _job(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


async def _removed(client: docker.DockerClient, container_id: str) -> bool:
    return not await asyncio.to_thread(container_exists, client, container_id)


async def _no_workers_left(client: docker.DockerClient, network: str) -> bool:
    return not await asyncio.to_thread(worker_containers, client, network)


async def test_job_of_a_killed_tower_whose_container_is_gone_is_failed(
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
    await asyncio.to_thread(_remove, docker_client, container_id)
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
    print(f"failed {failed_after:.1f}s and container gone {removed_after:.1f}s after kill -9")


async def test_job_of_a_killed_tower_whose_container_is_gone_is_requeued(
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
    await asyncio.to_thread(_remove, docker_client, first_container)

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
