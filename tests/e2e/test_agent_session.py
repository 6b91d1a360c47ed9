"""A Claude Code session end to end (issue 19): the real CLI in the real worker image,
through the gateway, against the scripted fake LLM. Turn 1 writes a file with a tool;
turn 2, a continue of it, sends the fake LLM turn 1's conversation (its prompt, its tool
call and result, its answer) and finds the file in its workspace."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import docker
import pytest

from tests.e2e.agents import JOB_DEADLINE, AgentRig, claude_job
from tests.e2e.agents import agent_rig as rig_for
from tests.e2e.gateway import GatewayNames, gateway_names
from tests.e2e.support import describe, isolated_network, wait_terminal
from tests.support.fake_llm import text, tool

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
async def agent_rig(
    database_url: str,
    network: str,
    names: GatewayNames,
    gateway_image: str,
    worker_image: str,
    docker_client: docker.DockerClient,
) -> AsyncIterator[AgentRig]:
    images = (gateway_image, worker_image)
    async with rig_for(docker_client, database_url, network, names, images) as rig:
        yield rig


def main_calls(rig: AgentRig) -> list[Any]:
    return [call for call in rig.fake.model_calls() if not call.side]


async def test_a_continued_claude_code_job_resumes_its_conversation_in_its_workspace(
    agent_rig: AgentRig,
) -> None:
    # The fake answers by the number of assistant turns a request carries: turn 2's
    # requests carry turn 1's two, so they get the script's third and fourth answers.
    agent_rig.fake.set_script(
        [
            tool("Bash", command=WRITE, description="write the notes"),
            text("Wrote the notes (session-marker-one)."),
            tool("Bash", command=READ, description="read the notes"),
            text("The notes say: {tool_result}"),
        ]
    )
    first = await claude_job(agent_rig, "Write notes.md (prompt-marker-one).")
    assert first["status"] == "completed", describe(first)
    assert first["result"] == "Wrote the notes (session-marker-one)."
    agent_rig.fake.clear()

    answer = await agent_rig.tower.post(
        f"/jobs/{first['job_id']}/continue", json={"prompt": "Read them back (marker-two)."}
    )
    assert answer.status_code == 202, answer.text
    second = await wait_terminal(agent_rig.tower, answer.json()["job_id"], JOB_DEADLINE)

    assert second["status"] == "completed", describe(second)
    assert "turn-one-wrote-this" in second["result"]  # the file was in its workspace
    assert (second["session_id"], second["parent_job_id"], second["turn"]) == (
        first["job_id"],
        first["job_id"],
        2,
    )
    # Turn 2's first request carries turn 1's conversation, not a summary of it.
    conversation = json.dumps(main_calls(agent_rig)[0].body["messages"])
    for part in ("prompt-marker-one", WRITE, "turn-one-wrote-this", "session-marker-one"):
        assert part in conversation, part
    assert "marker-two" in conversation
    session = (await agent_rig.tower.get(f"/sessions/{first['job_id']}")).json()
    assert [turn["status"] for turn in session["turns"]] == ["completed", "completed"]
