"""The gateway and the towers around it (issue 16): replicas on one host come and go
without cutting each other's agents off, and a gateway that cannot ask tower is replaced.

Real tower processes (tests/support/towers.py) run real Claude Code jobs in the real
worker image, through the real gateway they manage, against the scripted fake LLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.e2e.agents import JOB_DEADLINE
from tests.e2e.gateway import (
    GatewayNames,
    egress_host_address,
    gateway_address,
    gateway_names,
    gateway_settings,
)
from tests.e2e.support import describe, isolated_network, wait_terminal
from tests.support.fake_llm import FakeLLM, text, tool
from tests.support.towers import TowerProcess, start_tower
from tower.gateway import tokens
from tower.gateway.listener import slot_socket
from tower.settings import Settings

# Tower settings the processes get, as environment variables.
PASSED = (
    "tower_runner", "worker_net", "worker_image", "gateway_socket_volume", "pool_size",
    "poll_interval", "gateway_managed", "gateway_url", "gateway_image", "gateway_egress_net",
    "gateway_auth_socket", "gateway_auth_cache_seconds", "anthropic_api_key",
    "anthropic_upstream", "openai_upstream", "gemini_upstream", "egress_managed",
)  # fmt: skip
# The agent's second call comes after this bash command: past any cached yes (1 s + 1).
AGENT_PAUSE = "sleep 4"


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


@pytest.fixture
def names(docker_client: docker.DockerClient) -> Iterator[GatewayNames]:
    with gateway_names(docker_client) as found:
        yield found


@pytest.fixture
async def fake(docker_client: docker.DockerClient, names: GatewayNames) -> AsyncIterator[FakeLLM]:
    host = await asyncio.to_thread(egress_host_address, docker_client, names)
    with FakeLLM(host=host) as found:
        found.set_script(
            [tool("Bash", command=AGENT_PAUSE, description="pause"), text("done: {tool_result}")]
        )
        yield found


def tower_env(settings: Settings) -> dict[str, Any]:
    values = settings.model_dump(include=set(PASSED))
    values["anthropic_api_key"] = settings.anthropic_api_key.get_secret_value()
    return {name: str(value).lower() if isinstance(value, bool) else value
            for name, value in values.items()}  # fmt: skip


@contextlib.asynccontextmanager
async def towers(
    settings: Settings, workdir: Path, *ids: str
) -> AsyncIterator[dict[str, TowerProcess]]:
    """Towers started at the same instant; all stopped after."""
    env = tower_env(settings)
    started = await asyncio.gather(
        *(start_tower(settings.database_url, workdir, tower_id, **env) for tower_id in ids),
        return_exceptions=True,
    )
    running = {t.tower_id: t for t in started if isinstance(t, TowerProcess)}
    try:
        failures = [t for t in started if not isinstance(t, TowerProcess)]
        assert not failures, failures
        yield running
    finally:
        for tower in running.values():
            with contextlib.suppress(Exception):
                tower.terminate(timeout=60)


async def submit(client: httpx.AsyncClient, prompt: str) -> str:
    body = {"agent_id": "e2e", "engine": "claude-code", "prompt": prompt}
    response = await client.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def made_again(directory: Path) -> None:
    shutil.rmtree(directory)
    directory.mkdir()


async def until_agents_called(fake: FakeLLM, count: int) -> None:
    """Until `count` agents made their first model call (their jobs run)."""
    for _ in range(2400):
        if len([c for c in fake.model_calls() if not c.side and c.turn == 0]) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the agents never called: {len(fake.model_calls())} calls")


async def run_on(api: httpx.AsyncClient, tower: str, others: list[TowerProcess]) -> str:
    """Submit a job and see `tower` claim it: the others are frozen (SIGSTOP) until then."""
    for other in others:
        other.process.send_signal(signal.SIGSTOP)
    try:
        job_id = await submit(api, f"a job for {tower}")
        for _ in range(1200):
            record = (await api.get(f"/jobs/{job_id}")).json()
            if record["status"] == "running":
                assert record["ran_by"] == tower, describe(record)
                return job_id
            await asyncio.sleep(0.05)
        raise AssertionError(f"{tower} never claimed {job_id}")
    finally:
        for other in others:
            other.process.send_signal(signal.SIGCONT)


async def test_towers_stopped_in_turn_or_killed_while_another_runs_an_agent(
    database_url: str,
    network: str,
    names: GatewayNames,
    gateway_image: str,
    worker_image: str,
    fake: FakeLLM,
    tmp_path: Path,
) -> None:
    settings = gateway_settings(
        database_url, network, names, gateway_image, fake.url, worker_image=worker_image
    )
    base = Path(settings.gateway_auth_socket)
    records = []
    # Started at the same instant: both start, on sockets of their own.
    async with towers(settings, tmp_path, "ta", "tb") as running:
        assert slot_socket(base, 0).exists() and slot_socket(base, 1).exists()
        for stopped, survivor, restarted in (("ta", "tb", "ta2"), ("tb", "ta2", None)):
            async with httpx.AsyncClient(base_url=running[survivor].base_url, timeout=60) as api:
                fake.clear()
                job_id = await run_on(api, survivor, [running[stopped]])
                await until_agents_called(fake, 1)
                assert running[stopped].terminate(timeout=60) == 0, running[stopped].log()
                # Stopped (its socket gone) before the agent's next call, after its pause.
                assert (await api.get(f"/jobs/{job_id}")).json()["status"] == "running"
                records.append(await wait_terminal(api, job_id, JOB_DEADLINE))
                assert len(main_calls(fake)) == 2, main_calls(fake)
                if restarted is not None:
                    env = tower_env(settings)
                    tower = await start_tower(database_url, tmp_path, restarted, **env)
                    running[restarted] = tower
                del running[stopped]
        # kill -9 of the replica on slot 0, the gateway's first: its dead socket stays, and
        # the other's agent calls pass it by.
        running["tc"] = await start_tower(database_url, tmp_path, "tc", **tower_env(settings))
        (killed,) = [tower for tower in running.values() if holds(tower, base, 0)]
        (other,) = [tower for tower in running.values() if tower is not killed]
        async with httpx.AsyncClient(base_url=other.base_url, timeout=60) as api:
            fake.clear()
            job_id = await run_on(api, other.tower_id, [killed])
            await until_agents_called(fake, 1)
            killed.kill()
            del running[killed.tower_id]
            assert slot_socket(base, 0).exists()
            assert (await api.get(f"/jobs/{job_id}")).json()["status"] == "running"
            records.append(await wait_terminal(api, job_id, JOB_DEADLINE))
    for record in records:
        assert record["status"] == "completed", describe(record)
        assert record["result"].startswith("done: "), describe(record)


def holds(tower: TowerProcess, base: Path, slot: int) -> bool:
    """Whether `tower`'s process has slot `slot`'s lock file open (it holds the slot)."""
    lock = str(base.with_name(f"{base.stem}-{slot}.lock"))
    fds = Path(f"/proc/{tower.pid}/fd")
    return any(os.readlink(fd) == lock for fd in fds.iterdir() if fd.is_symlink())


def main_calls(fake: FakeLLM) -> list[Any]:
    return [call for call in fake.model_calls() if not call.side]


async def test_a_gateway_that_cannot_reach_tower_is_replaced_and_calls_pass(
    database_url: str,
    network: str,
    names: GatewayNames,
    gateway_image: str,
    worker_image: str,
    fake: FakeLLM,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    # The socket directory stands for the all-in-one state dir's gateway/ directory.
    settings = gateway_settings(
        database_url, network, names, gateway_image, fake.url, worker_image=worker_image
    )
    async with towers(settings, tmp_path, "first") as running:
        running["first"].terminate()
    kept = docker_client.containers.get(names.container)
    # The state dir deleted and made again: the running gateway's mount still shows the
    # deleted directory, where no tower will ever answer.
    await asyncio.to_thread(made_again, Path(names.socket_dir))

    async with towers(settings, tmp_path, "second") as running:
        tower = running["second"]
        async with httpx.AsyncClient(base_url=tower.base_url, timeout=60) as api:
            health = (await api.get("/health")).json()
            replaced = docker_client.containers.get(names.container)
            base = await asyncio.to_thread(gateway_address, docker_client, names)
            async with httpx.AsyncClient(base_url=base, timeout=30) as gateway:
                check = await gateway.get("/health/tower/0", headers={"x-api-key": tokens.mint()})
            fake.set_script([text("through the new gateway")])
            record = await wait_terminal(api, await submit(api, "hello"), JOB_DEADLINE)
            # Deleted under a running tower: its /health says the gateway cannot ask it.
            await asyncio.to_thread(made_again, Path(names.socket_dir))
            degraded = await api.get("/health")
    assert degraded.status_code == 503, degraded.text
    assert "cannot reach tower's token check" in degraded.json()["checks"]["gateway"]
    assert "cannot reach this tower's token check" in tower.log(), tower.log()
    assert replaced.id != kept.id
    assert health["checks"]["gateway"] == "ok", health
    assert check.status_code == 200, check.text
    assert record["status"] == "completed", describe(record)
    assert record["result"] == "through the new gateway"
