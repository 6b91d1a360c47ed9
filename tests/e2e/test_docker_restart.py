"""A Docker daemon restarted mid-job, with live-restore on (docs/operations.md, "When
Docker goes away"): the worker's container runs on, the tower waits for Docker, follows
the container again from its log, and the job completes on its first attempt with each
line of its output stored once.

The daemon restarted here is a second engine of the test's own
(tests/support/second_docker.py, live-restore on), never the machine's shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import docker
import httpx
import pytest

from tests.e2e.support import describe, poll_until, register_shell, submit, wait_terminal
from tests.support.second_docker import SecondDocker
from tests.support.towers import TowerProcess, connect, start_tower

pytestmark = pytest.mark.slow

DEADLINE = 90.0
SLOT_OF_JOB = "SELECT container_id FROM pool_slots WHERE job_id = $1"
LOG_TEXT = """
SELECT data ->> 'text' AS text FROM job_events
WHERE job_id = $1 AND kind = 'log' AND data ->> 'stream' = 'stdout' ORDER BY seq
"""


@pytest.fixture
async def tower(
    engine: SecondDocker, database_url: str, tmp_path: Path
) -> AsyncIterator[TowerProcess]:
    started = await start_tower(
        database_url,
        tmp_path,
        "restart",
        tower_runner="docker",
        docker_host=engine.host,
        worker_net="parpaing-restart-test",
        gateway_socket_volume="parpaing-restart-test-socket",
        pool_size=0,
        poll_interval=0.2,
    )
    try:
        yield started
    finally:
        started.terminate()
        if not engine.running:
            engine.start()


async def test_a_job_survives_a_daemon_restart_with_live_restore(
    engine: SecondDocker, tower: TowerProcess, database_url: str
) -> None:
    gate = f"g{uuid.uuid4().hex[:8]}"
    script = f"echo before\nuntil [ -e /tmp/{gate} ]; do sleep 0.05; done\necho after\n"
    async with httpx.AsyncClient(base_url=tower.base_url, timeout=60) as client:
        await register_shell(client)
        job_id = await submit(client, script)
        container_id = await _container_of(database_url, job_id)
        await poll_until(_stored(database_url, job_id, "before"), "the first line stored")

        engine.stop()  # live-restore: the container runs on without its daemon
        engine.start()
        with contextlib.closing(engine.client()) as second:
            await asyncio.to_thread(_open, second, container_id, gate)
        record = await wait_terminal(client, job_id, deadline=DEADLINE)
    assert (record["status"], record["attempt"]) == ("completed", 1), describe(record)
    assert record["result"].split() == ["before", "after"], describe(record)
    # Followed again, not run again: "before" once, from the one container.
    assert (await _log(database_url, job_id)).split() == ["before", "after"]


async def _container_of(database_url: str, job_id: str) -> str:
    found: list[str] = []

    async def running() -> bool:
        connection = await connect(database_url)
        try:
            container_id = await connection.fetchval(SLOT_OF_JOB, job_id)
        finally:
            await connection.close()
        found[:] = [container_id] if container_id else []
        return bool(found)

    await poll_until(running, f"{job_id}'s container", DEADLINE)
    return found[0]


def _stored(database_url: str, job_id: str, line: str) -> Callable[[], Awaitable[bool]]:
    async def stored() -> bool:
        return line in await _log(database_url, job_id)

    return stored


async def _log(database_url: str, job_id: str) -> str:
    connection = await connect(database_url)
    try:
        rows = await connection.fetch(LOG_TEXT, job_id)
    finally:
        await connection.close()
    return "".join(row["text"] for row in rows)


def _open(client: docker.DockerClient, container_id: str, name: str) -> None:
    result = client.containers.get(container_id).exec_run(["touch", f"/tmp/{name}"])
    assert result.exit_code == 0, result.output
