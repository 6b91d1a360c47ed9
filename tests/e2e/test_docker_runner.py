"""The Docker runner through a live tower: real jobs in real containers, end to end.

Each job ends the way docs/execution.md maps it: completed with the engine's text,
failed with its stderr, timeout, cancel, result too large; and in every case the job's
container is gone afterwards. The pool is empty (POOL_SIZE=0), so every job takes a
cold slot: the runner's own path, with the pool's warm path covered in test_pool.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import docker
import httpx
import pytest

from tests.e2e.support import (
    container_exists,
    describe,
    docker_settings,
    isolated_network,
    poll_until,
    run_job,
    running_container,
    serve,
    shell_tower,
    submit,
    wait_terminal,
    worker_containers,
)
from tower.settings import Settings

CANCEL_DEADLINE = 1.0  # seconds from DELETE to the container's disappearance


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


def _settings(database_url: str, network: str, **overrides: Any) -> Settings:
    return docker_settings(database_url, network, **overrides)


async def _gone(client: docker.DockerClient, container_id: str) -> bool:
    return not await asyncio.to_thread(container_exists, client, container_id)


async def _no_workers(client: docker.DockerClient, network: str) -> bool:
    return not await asyncio.to_thread(worker_containers, client, network)


async def _wait_gone(client: docker.DockerClient, container_id: str, deadline: float) -> None:
    await poll_until(lambda: _gone(client, container_id), f"{container_id[:12]} removed", deadline)


# --- jobs that end on their own ---------------------------------------------------------


async def test_dry_run_of_claude_code_completes_with_its_argv(
    database_url: str, network: str, worker_image: str
) -> None:
    settings = _settings(database_url, network)
    async with serve(settings) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        body = {"engine": "claude-code", "profile": "default", "dry_run": True}
        record = await run_job(client, "Say hello.", **body)
    assert record["status"] == "completed", describe(record)
    assert record["exit_code"] == 0
    report = json.loads(record["result"])
    assert report["dry_run"] is True
    assert report["argv"][0] == "claude"
    assert "--output-format" in report["argv"]


async def test_engine_output_is_the_result_and_the_container_is_removed(
    database_url: str, network: str, worker_image: str, docker_client: docker.DockerClient
) -> None:
    settings = _settings(database_url, network)
    async with shell_tower(settings) as client:
        record = await run_job(client, "printf 'from a worker'")
        # POOL_SIZE=0: the job's cold container was the only worker on this network.
        await poll_until(lambda: _no_workers(docker_client, network), "no workers left", 30)
    assert record["status"] == "completed", describe(record)
    assert record["exit_code"] == 0
    assert record["result"] == "from a worker"


async def test_non_zero_exit_fails_with_the_engines_stderr(
    database_url: str, network: str, worker_image: str
) -> None:
    settings = _settings(database_url, network)
    async with shell_tower(settings) as client:
        record = await run_job(client, "echo 'the parser broke' >&2; exit 3")
    assert record["status"] == "failed", describe(record)
    assert record["failure_reason"] == "error"
    assert record["exit_code"] == 3
    assert "the parser broke" in record["error"]


async def test_an_agent_can_run_what_it_builds_in_its_scratch_space(
    database_url: str, network: str, worker_image: str
) -> None:
    # Agents run ./configure, node_modules/.bin/*, venv scripts: scratch must not be noexec.
    script = "; ".join(
        f"printf '#!/bin/sh\\necho ran in {place}\\n' > {place}/x.sh; chmod +x {place}/x.sh; "
        f"{place}/x.sh"
        for place in ("/workspace", "/tmp", "/home/worker")
    )
    settings = _settings(database_url, network)
    async with shell_tower(settings) as client:
        record = await run_job(client, script)
    assert record["status"] == "completed", describe(record)
    assert record["result"].splitlines() == [
        "ran in /workspace",
        "ran in /tmp",
        "ran in /home/worker",
    ]


async def test_result_over_max_result_size_fails_clearly(
    database_url: str, network: str, worker_image: str
) -> None:
    settings = _settings(database_url, network, max_result_size=2048)
    async with shell_tower(settings) as client:
        record = await run_job(client, "head -c 5000 /dev/zero | tr '\\0' x")
    assert record["status"] == "failed", describe(record)
    assert record["failure_reason"] == "result_too_large"
    assert "5000" in record["error"] and "2048" in record["error"]
    assert record["result"] in (None, "")


async def test_a_bundle_larger_than_its_volume_fails_naming_the_setting(
    database_url: str, network: str, worker_image: str
) -> None:
    # The worker reads the whole frame even when it cannot keep it, so tower's write
    # completes and the job fails with the worker's reason, not a stuck delivery.
    settings = _settings(database_url, network, bundle_volume_size="1m")
    async with serve(settings) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        body = {"engine": "claude-code", "profile": "default", "dry_run": True}
        record = await run_job(client, "x" * (3 * 1024 * 1024), **body)
    assert record["status"] == "failed", describe(record)
    assert record["failure_reason"] == "error"
    assert "BUNDLE_VOLUME_SIZE" in record["error"], describe(record)
    assert "No space left" in record["error"], describe(record)


# --- jobs tower stops -------------------------------------------------------------------


async def test_timeout_kills_the_job_and_removes_its_container(
    database_url: str, network: str, worker_image: str, docker_client: docker.DockerClient
) -> None:
    settings = _settings(database_url, network, worker_timeout_seconds=2)
    async with shell_tower(settings) as client:
        job_id = await submit(client, "sleep 60")
        container_id = await running_container(database_url, job_id)
        record = await wait_terminal(client, job_id, deadline=60)
        await _wait_gone(docker_client, container_id, deadline=30)
    assert record["status"] == "failed", describe(record)
    assert record["failure_reason"] == "timeout"
    assert "2 s" in record["error"]


async def test_cancel_removes_the_container_within_a_second(
    database_url: str, network: str, worker_image: str, docker_client: docker.DockerClient
) -> None:
    settings = _settings(database_url, network)
    async with shell_tower(settings) as client:
        job_id = await submit(client, "echo started; sleep 60")
        container_id = await running_container(database_url, job_id)
        # The engine has really started once its output is in the container's logs.
        await poll_until(lambda: _logged(docker_client, container_id, b"started"), "start")
        cancelled_at = time.monotonic()
        response = await client.delete(f"/jobs/{job_id}")
        assert response.status_code in (200, 202), response.text
        gone = await _gone_within(docker_client, container_id, CANCEL_DEADLINE)
        elapsed = time.monotonic() - cancelled_at
        record = (await client.get(f"/jobs/{job_id}")).json()
    print(f"cancel -> container gone: {elapsed * 1000:.0f} ms")
    assert gone, f"container still there {CANCEL_DEADLINE} s after the cancel"
    assert record["status"] == "cancelled", describe(record)


async def _gone_within(client: docker.DockerClient, container_id: str, deadline: float) -> bool:
    # Finer steps than poll_until: the point is how soon it goes.
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if await _gone(client, container_id):
            return True
        await asyncio.sleep(0.02)
    return await _gone(client, container_id)


async def _logged(client: docker.DockerClient, container_id: str, text: bytes) -> bool:
    logs: bytes = await asyncio.to_thread(client.api.logs, container_id)
    return text in logs


# --- Docker not there -------------------------------------------------------------------


async def test_without_docker_the_tower_serves_says_why_and_keeps_jobs_queued(
    database_url: str, network: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # A socket path nothing listens on: the runner's client cannot reach any daemon.
    # The tower serves, /health says Docker is why it is degraded, and a job waits in the
    # queue for a replica whose Docker answers (test_docker_outage.py: it runs once
    # Docker is back, without a restart).
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    settings = _settings(database_url, network)
    async with shell_tower(settings) as client:
        job_id = await submit(client, "echo waits for Docker")

        async def degraded() -> httpx.Response | None:
            answer = await client.get("/health")
            return answer if answer.status_code == 503 else None

        health = await poll_until(degraded, "/health to say Docker is down")
        record = (await client.get(f"/jobs/{job_id}")).json()
    assert "Docker" in health.json()["checks"]["docker"], health.text
    assert (record["status"], record["attempt"]) == ("pending", 0), describe(record)
