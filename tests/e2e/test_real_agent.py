"""A real agent, end to end: the Claude Code CLI in the real worker image, through the real
gateway started by a real tower, against the scripted fake LLM (tests/support/fake_llm.py).

The fake listens on this host's address on the test's own egress network, so only the
gateway can reach it (workers cannot: they have no network, only the gateway's socket) and nothing
leaves this host. The gateway holds the "real" key; the fake checks it arrived on every call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest

from tests.e2e.agents import JOB_DEADLINE, REAL_GEMINI_KEY, AgentRig, claude_job
from tests.e2e.agents import agent_rig as rig_for
from tests.e2e.gateway import (
    REAL_ANTHROPIC_KEY,
    REAL_OPENAI_KEY,
    GatewayNames,
    anthropic_headers,
    gateway_names,
)
from tests.e2e.support import (
    describe,
    isolated_network,
    last_json_line,
    python_script,
    register_shell,
    run_job,
)
from tests.support.fake_llm import FakeLLM, Turn, text, tool

# nginx may serve a cached yes for up to GATEWAY_AUTH_CACHE_SECONDS + 1 s (docs/gateway.md).
CACHE_BOUND = 2.5


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
    """A tower running its gateway in front of the fake LLM, with the real worker image."""
    images = (gateway_image, worker_image)
    async with rig_for(docker_client, database_url, network, names, images) as rig:
        yield rig


def assert_real_key_on_every_call(fake: FakeLLM) -> None:
    calls = fake.requests
    assert calls, "the fake LLM was never called"
    for call in calls:
        assert call.header("x-api-key") == REAL_ANTHROPIC_KEY, (call.path, call.headers)


def main_calls(fake: FakeLLM) -> list[Any]:
    return [call for call in fake.model_calls() if not call.side]


async def test_a_claude_code_job_completes_with_the_scripted_answer_and_its_usage(
    agent_rig: AgentRig,
) -> None:
    agent_rig.fake.set_script(
        [Turn(text="The answer is 42.", usage={"input_tokens": 1234, "output_tokens": 56})]
    )
    record = await claude_job(agent_rig, "What is the answer? (e2e-marker-7781)")

    assert record["status"] == "completed", describe(record)
    assert record["result"] == "The answer is 42."
    calls = main_calls(agent_rig.fake)
    assert len(calls) == 1
    assert "e2e-marker-7781" in json.dumps(calls[0].body["messages"])
    usage = record["usage"]
    assert usage["input_tokens"] == 1234
    assert usage["output_tokens"] == 56
    # The CLI prices the tokens itself; a positive cost is what it reported.
    assert isinstance(usage["cost_usd"], float) and usage["cost_usd"] > 0
    assert_real_key_on_every_call(agent_rig.fake)
    # With the engine's environment the CLI makes model calls only (no event logging).
    assert {call.api for call in agent_rig.fake.requests} == {"messages"}


async def test_a_scripted_tool_use_turn_runs_bash_in_the_workspace(agent_rig: AgentRig) -> None:
    command = "echo written-by-the-agent > /workspace/proof.txt && pwd && cat /workspace/proof.txt"
    agent_rig.fake.set_script(
        [
            tool("Bash", command=command, description="write a file"),
            text("Bash said: {tool_result}"),
        ]
    )
    record = await claude_job(agent_rig, "Write proof.txt in the workspace.")

    assert record["status"] == "completed", describe(record)
    # The final text quotes the tool result the CLI sent back (the command's output, then
    # whatever the CLI appends for the model): the command really ran, in /workspace.
    assert record["result"].startswith("Bash said: /workspace\nwritten-by-the-agent\n")
    turns = [call.turn for call in main_calls(agent_rig.fake)]
    assert turns == [0, 1]
    usage = record["usage"]
    assert usage["input_tokens"] == 2 * 120 and usage["output_tokens"] == 2 * 30
    assert_real_key_on_every_call(agent_rig.fake)


# --- the real key never reaches a worker -------------------------------------------------

# Runs as the engine of a job with the gateway environment Claude Code gets. It prints its
# environment, then searches every file it can read (the image, /bundle, /workspace, /tmp,
# $HOME) and /proc (every process's environ and cmdline) for the needles. The needles come
# reversed in the script and are turned round only in this process's memory, so the search
# cannot find its own script. A planted needle (written to a file, and into a child
# process's environment) proves the search finds what is there.
KEY_SEARCH = r"""
import json, os, subprocess, sys, urllib.request
key = __KEY__[::-1].encode()
planted = __PLANTED__[::-1].encode()
with open("/workspace/planted.txt", "wb") as f:
    f.write(b"some text " + planted + b" more text")
child = subprocess.Popen(["sleep", "60"], env={"PLANTED": planted.decode()})
me = str(os.getpid())

def hits(path):
    found = set()
    try:
        with open(path, "rb") as f:
            tail = b""
            while chunk := f.read(1 << 20):
                window = tail + chunk
                for name, needle in (("key", key), ("planted", planted)):
                    if needle in window:
                        found.add(name)
                tail = window[-64:]
    except OSError:
        pass
    return found

found = {"key": [], "planted": []}
searched = 0
for root, dirs, files in os.walk("/"):
    if root == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
    for name in files:
        path = os.path.join(root, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        searched += 1
        for what in hits(path):
            found[what].append(path)
for pid in os.listdir("/proc"):
    if not pid.isdigit() or pid == me:
        continue
    for part in ("environ", "cmdline"):
        for what in hits(f"/proc/{pid}/{part}"):
            found[what].append(f"/proc/{pid}/{part}")
child.kill()
token = os.environ.get("ANTHROPIC_API_KEY", "")
request = urllib.request.Request(
    os.environ["ANTHROPIC_BASE_URL"] + "/v1/messages",
    data=json.dumps({"model": "m", "max_tokens": 5,
                     "messages": [{"role": "user", "content": "hi"}]}).encode(),
    headers={"x-api-key": token, "anthropic-version": "2023-06-01",
             "content-type": "application/json"},
)
with urllib.request.urlopen(request, timeout=30) as answer:
    status = answer.status
print(json.dumps({
    "env": dict(os.environ), "found": found, "searched": searched,
    "child": child.pid, "token": token, "gateway_status": status,
}))
"""

PLANTED = "planted-needle-" + "q" * 20


async def test_the_real_key_is_nowhere_in_a_worker_and_a_stale_token_is_refused(
    agent_rig: AgentRig,
) -> None:
    await register_shell(agent_rig.tower)
    engine = (await agent_rig.tower.get("/configs/engine/claude-code")).json()["content"]
    env = engine[engine.index("[env]") :]  # the very environment Claude Code jobs get
    shell = (await agent_rig.tower.get("/configs/engine/shell")).json()["content"]
    put = await agent_rig.tower.put("/configs/engine/shell", json={"content": shell + "\n" + env})
    assert put.is_success, put.text
    source = KEY_SEARCH.replace("__KEY__", repr(REAL_ANTHROPIC_KEY[::-1]))
    source = source.replace("__PLANTED__", repr(PLANTED[::-1]))
    agent_rig.fake.set_script([text("hello")])

    report = last_json_line(await run_job(agent_rig.tower, python_script(source)))

    # The positive control: the search finds a string in a file and in a process's environ.
    assert "/workspace/planted.txt" in report["found"]["planted"]
    assert f"/proc/{report['child']}/environ" in report["found"]["planted"]
    assert report["searched"] > 1000  # it walked the image, not an empty directory
    assert report["found"]["key"] == []
    assert all(REAL_ANTHROPIC_KEY not in value for value in report["env"].values())
    assert report["env"]["ANTHROPIC_API_KEY"] == report["token"] != ""
    # The token worked while the job ran, and the fake got the real key in its place.
    assert report["gateway_status"] == 200
    assert_real_key_on_every_call(agent_rig.fake)
    assert len(agent_rig.fake.requests) == 1

    # The job is over: once a cached yes has lapsed, its token is refused before the fake.
    await asyncio.sleep(CACHE_BOUND)
    agent_rig.fake.clear()
    stale = await agent_rig.gateway.post(
        "/anthropic/v1/messages", json={}, headers=anthropic_headers(report["token"])
    )
    assert stale.status_code == 401
    assert agent_rig.fake.requests == []


# --- the other shipped engines that take a base URL -------------------------------------


@dataclass(frozen=True)
class EngineCase:
    engine: str
    model: str
    api: str  # the fake's name for the API the CLI calls
    credential: str  # the header the real key must arrive in
    real_key: str
    # Engines that offer no tools (Aider), or offer them in a shape the fake does not
    # read as tools, follow the script on every call.
    side_text: str | None = "ok"


OTHER_ENGINES = [
    EngineCase(
        "opencode", "anthropic/claude-sonnet-4-5", "messages", "x-api-key", REAL_ANTHROPIC_KEY
    ),
    EngineCase(
        "codex", "gpt-fake", "responses", "authorization", f"Bearer {REAL_OPENAI_KEY}", None
    ),
    EngineCase("gemini", "gemini-2.5-flash", "gemini", "x-goog-api-key", REAL_GEMINI_KEY),
    EngineCase(
        "aider", "openai/gpt-fake", "chat", "authorization", f"Bearer {REAL_OPENAI_KEY}", None
    ),
]


@pytest.mark.parametrize("case", OTHER_ENGINES, ids=lambda case: case.engine)
async def test_another_engine_runs_a_job_through_the_gateway(
    agent_rig: AgentRig, case: EngineCase
) -> None:
    answer = f"Scripted answer for {case.engine}."
    agent_rig.fake.set_script(
        [Turn(text=answer, usage={"input_tokens": 321, "output_tokens": 23})],
        side_text=case.side_text,
    )
    body = {"agent_id": "e2e", "engine": case.engine, "model": case.model, "prompt": "Say it."}
    response = await agent_rig.tower.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    record = await _wait(agent_rig, response.json()["job_id"])

    assert record["status"] == "completed", describe(record)
    assert answer in record["result"]
    calls = [call for call in main_calls(agent_rig.fake) if call.api == case.api]
    assert calls, [(call.method, call.path) for call in agent_rig.fake.requests]
    for call in agent_rig.fake.requests:
        assert call.header(case.credential) == case.real_key, (call.path, call.headers)
    # What the CLI reported: the tokens of its own turns (OpenCode leaves its title call out).
    usage = record["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (321 * len(calls), 23 * len(calls))


async def _wait(rig: AgentRig, job_id: str) -> dict[str, Any]:
    waited = await rig.tower.get(
        f"/jobs/{job_id}/wait", params={"timeout": JOB_DEADLINE}, timeout=JOB_DEADLINE + 30
    )
    assert waited.status_code == 200, waited.text
    record: dict[str, Any] = waited.json()
    return record
