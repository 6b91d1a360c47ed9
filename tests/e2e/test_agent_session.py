"""A Claude Code session end to end (issue 19): two tower replicas (real processes) run
the real CLI in the real worker image, through the gateway they manage, against the
scripted fake LLM. Turn 1 runs on one replica and writes a file with a tool; turn 2, a
continue of it, runs on the other: it sends the fake LLM turn 1's conversation (its
prompt, its tool call and result, its answer) and finds the file in its workspace.
Nothing but PostgreSQL carries the session from one replica to the other."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.e2e.agents import JOB_DEADLINE
from tests.e2e.gateway import GatewayNames, egress_host_address, gateway_names, gateway_settings
from tests.e2e.support import describe, isolated_network, wait_terminal
from tests.e2e.test_gateway_replicas import towers
from tests.support.fake_llm import FakeLLM, text, tool
from tests.support.towers import TowerProcess

WRITE = "echo turn-one-wrote-this > /workspace/notes.md && cat /workspace/notes.md"
READ = "cat /workspace/notes.md"


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
        # The fake answers by the number of assistant turns a request carries: turn 2's
        # requests carry turn 1's two, so they get the third and fourth answers.
        found.set_script(
            [
                tool("Bash", command=WRITE, description="write the notes"),
                text("Wrote the notes (session-marker-one)."),
                tool("Bash", command=READ, description="read the notes"),
                text("The notes say: {tool_result}"),
            ]
        )
        yield found


def main_calls(fake: FakeLLM) -> list[Any]:
    return [call for call in fake.model_calls() if not call.side]


async def claimed_by(
    tower: TowerProcess, others: list[TowerProcess], post: Callable[[], Awaitable[str]]
) -> str:
    """Make a job with `post` and see `tower` claim it: the others are frozen (SIGSTOP)
    until then."""
    for other in others:
        other.process.send_signal(signal.SIGSTOP)
    try:
        job_id = await post()
        async with httpx.AsyncClient(base_url=tower.base_url, timeout=60) as api:
            for _ in range(1200):
                record = (await api.get(f"/jobs/{job_id}")).json()
                if record["status"] != "pending":
                    assert record["ran_by"] == tower.tower_id, describe(record)
                    return job_id
                await asyncio.sleep(0.05)
        raise AssertionError(f"{tower.tower_id} never claimed {job_id}")
    finally:
        for other in others:
            other.process.send_signal(signal.SIGCONT)


async def test_a_continued_claude_code_job_resumes_its_conversation_on_another_replica(
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
    async with towers(settings, tmp_path, "ta", "tb") as running:
        one, two = running["ta"], running["tb"]
        async with (
            httpx.AsyncClient(base_url=one.base_url, timeout=60) as first_api,
            httpx.AsyncClient(base_url=two.base_url, timeout=60) as second_api,
        ):

            async def submit() -> str:
                body = {"agent_id": "e2e", "engine": "claude-code"}
                body["prompt"] = "Write notes.md (prompt-marker-one)."
                answer = await first_api.post("/jobs", json=body)
                assert answer.status_code == 202, answer.text
                return str(answer.json()["job_id"])

            first_id = await claimed_by(one, [two], submit)
            first = await wait_terminal(first_api, first_id, JOB_DEADLINE)
            assert first["status"] == "completed", describe(first)
            assert first["result"] == "Wrote the notes (session-marker-one)."
            fake.clear()

            async def continue_it() -> str:
                body = {"prompt": "Read them back (marker-two)."}
                answer = await second_api.post(f"/jobs/{first_id}/continue", json=body)
                assert answer.status_code == 202, answer.text
                return str(answer.json()["job_id"])

            second_id = await claimed_by(two, [one], continue_it)
            second = await wait_terminal(second_api, second_id, JOB_DEADLINE)
            session = (await second_api.get(f"/sessions/{first_id}")).json()

    assert second["status"] == "completed", describe(second)
    assert (first["ran_by"], second["ran_by"]) == ("ta", "tb")
    assert "turn-one-wrote-this" in second["result"]  # the file was in its workspace
    assert (second["session_id"], second["parent_job_id"], second["turn"]) == (
        first_id,
        first_id,
        2,
    )
    # Turn 2's first request carries turn 1's conversation, not a summary of it.
    conversation = json.dumps(main_calls(fake)[0].body["messages"])
    for part in ("prompt-marker-one", WRITE, "turn-one-wrote-this", "session-marker-one"):
        assert part in conversation, part
    assert "marker-two" in conversation
    assert [turn["status"] for turn in session["turns"]] == ["completed", "completed"]
