"""A real agent's rig: a tower running its own gateway in front of the scripted fake LLM,
with the real worker image (the Claude Code CLI inside)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import docker
import httpx

from tests.e2e.gateway import (
    GatewayNames,
    egress_host_address,
    gateway_address,
    gateway_settings,
)
from tests.e2e.support import serve, wait_terminal
from tests.support.fake_llm import FakeLLM

REAL_GEMINI_KEY = "real-gemini-" + "g" * 24
JOB_DEADLINE = 240.0


@dataclass
class AgentRig:
    tower: httpx.AsyncClient
    gateway: httpx.AsyncClient
    fake: FakeLLM


@contextlib.asynccontextmanager
async def agent_rig(
    docker_client: docker.DockerClient,
    database_url: str,
    network: str,
    names: GatewayNames,
    images: tuple[str, str],
    **overrides: Any,
) -> AsyncIterator[AgentRig]:
    """`images`: the gateway's and the worker's. `overrides`: more tower settings."""
    gateway_image, worker_image = images
    host = await asyncio.to_thread(egress_host_address, docker_client, names)
    with FakeLLM(host=host) as fake:
        settings = gateway_settings(
            database_url,
            network,
            names,
            gateway_image,
            fake.url,
            worker_image=worker_image,
            gemini_api_key=REAL_GEMINI_KEY,
            **overrides,
        )
        async with (
            serve(settings) as url,
            httpx.AsyncClient(base_url=url, timeout=60) as tower,
        ):
            base = await asyncio.to_thread(gateway_address, docker_client, names)
            async with httpx.AsyncClient(base_url=base, timeout=30) as gateway:
                await _until_healthy(gateway)
                yield AgentRig(tower, gateway, fake)


async def _until_healthy(gateway: httpx.AsyncClient) -> None:
    for _ in range(300):
        with contextlib.suppress(httpx.HTTPError):
            if (await gateway.get("/health")).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the gateway never answered /health")


async def claude_job(rig: AgentRig, prompt: str, **fields: Any) -> dict[str, Any]:
    body = {"agent_id": "e2e", "engine": "claude-code", "prompt": prompt, **fields}
    response = await rig.tower.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    return await wait_terminal(rig.tower, response.json()["job_id"], JOB_DEADLINE)
