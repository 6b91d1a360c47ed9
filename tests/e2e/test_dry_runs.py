"""Dry runs of every shipped engine complete through real containers, warm and cold.

A dry run starts no engine: the worker reports the argv it would run. Each job names
a shipped engine with the default profile, so the argv is the one a real job would get,
and the prompt must reach the engine some way other than argv.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from functools import partial
from typing import Any

import docker
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.support import (
    container_exists,
    describe,
    docker_settings,
    isolated_network,
    poll_until,
    run_job,
    serve,
    wait_pool_ready,
)

ENGINE_BINARIES = {
    "claude-code": "claude",
    "opencode": "opencode",
    "codex": "codex",
    "gemini": "gemini",
    "aider": "aider",
}
PROMPT = "Refactor the parser; the secret word is marmalade-7731."
POOL_SIZE = 2


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


async def dry_run(client: httpx.AsyncClient, engine: str) -> dict[str, Any]:
    body = {"engine": engine, "profile": "default", "dry_run": True}
    return await run_job(client, PROMPT, **body)


def assert_dry_run_of(engine: str, record: dict[str, Any]) -> None:
    assert record["status"] == "completed", describe(record)
    assert record["exit_code"] == 0, describe(record)
    report = json.loads(record["result"])
    assert report["dry_run"] is True, report
    argv = report["argv"]
    assert argv[0] == ENGINE_BINARIES[engine], argv
    assert not [arg for arg in argv if "marmalade" in arg], f"the prompt is in argv: {argv}"


async def test_every_engine_dry_runs_from_the_warm_pool(
    database_url: str, network: str, worker_image: str, docker_client: docker.DockerClient
) -> None:
    settings = docker_settings(database_url, network, pool_size=POOL_SIZE)
    async with serve(settings) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        for engine in ENGINE_BINARIES:
            ready = await wait_pool_ready(database_url, POOL_SIZE)
            record = await dry_run(client, engine)
            assert_dry_run_of(engine, record)
            # Warm: one container that was ready before the job is gone after it (single
            # use); a cold job would leave them all, and this wait would time out.
            taken = await poll_until(
                partial(_gone, docker_client, ready), f"{engine}'s job to use a warm container"
            )
            assert len(taken) == 1, f"{engine}: ready before {ready}, gone after {taken}"
        taken_by_kind = await acquisitions(client)
        await wait_pool_ready(database_url, POOL_SIZE)  # refilled; nothing takes any more
        ready_gauge = await gauge(client, "tower_pool_ready")
    assert taken_by_kind == {"warm": len(ENGINE_BINARIES), "cold": 0}
    assert ready_gauge == POOL_SIZE


async def test_every_engine_dry_runs_cold(
    database_url: str, network: str, worker_image: str
) -> None:
    settings = docker_settings(database_url, network, pool_size=0)
    async with serve(settings) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        for engine in ENGINE_BINARIES:
            assert_dry_run_of(engine, await dry_run(client, engine))
        taken_by_kind = await acquisitions(client)
    assert taken_by_kind == {"warm": 0, "cold": len(ENGINE_BINARIES)}


async def metric_samples(client: httpx.AsyncClient) -> list[Any]:
    text = (await client.get("/metrics")).text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


async def acquisitions(client: httpx.AsyncClient) -> dict[str, float]:
    """tower_pool_acquisitions_total by kind (warm, cold), as this replica counted them."""
    return {
        sample.labels["kind"]: sample.value
        for sample in await metric_samples(client)
        if sample.name == "tower_pool_acquisitions_total"
    }


async def gauge(client: httpx.AsyncClient, name: str) -> float:
    (value,) = [s.value for s in await metric_samples(client) if s.name == name]
    return float(value)


async def _gone(client: docker.DockerClient, slots: list[dict[str, Any]]) -> list[str] | None:
    ids = [slot["container_id"] for slot in slots]
    exists = [await asyncio.to_thread(container_exists, client, i) for i in ids]
    gone = [i for i, there in zip(ids, exists, strict=True) if not there]
    return gone or None
