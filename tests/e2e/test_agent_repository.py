"""A real agent on a real repository, end to end: tower clones it from a real git server
(git http-backend behind nginx, basic auth), the Claude Code CLI in the real worker image
edits it with its tools (scripted by the fake LLM, through the gateway), and tower hands
back the diff, pushes the branch and opens the pull request on a scripted forge. The
repository's credential never reaches the worker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest

from tests.e2e.agents import AgentRig, agent_rig, claude_job
from tests.e2e.gateway import GatewayNames, gateway_names
from tests.e2e.support import (
    describe,
    isolated_network,
    last_json_line,
    python_script,
    register_shell,
    run_job,
)
from tests.e2e.test_real_agent import KEY_SEARCH, PLANTED
from tests.support.fake_forge import FakeForge, fake_forge
from tests.support.fake_llm import text, tool
from tests.support.git_server import GitServer, git, git_server
from tests.support.live import live_tower
from tower.settings import Settings, new_secrets_key

TOKEN = "forge-token-" + "t" * 24
EDIT = (
    "printf 'hello, agent\\n' > /workspace/README.md"
    " && printf 'new file\\n' > /workspace/added.txt && git -C /workspace status --short"
)


@dataclass
class RepoRig:
    agent: AgentRig
    server: GitServer
    forge: FakeForge
    sha: str
    database_url: str


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[str]:
    yield from isolated_network(docker_client)


@pytest.fixture
def names(docker_client: docker.DockerClient) -> Iterator[GatewayNames]:
    with gateway_names(docker_client) as found:
        yield found


@pytest.fixture
async def rig(
    database_url: str,
    network: str,
    names: GatewayNames,
    gateway_image: str,
    worker_image: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> AsyncIterator[RepoRig]:
    images = (gateway_image, worker_image)
    with git_server(tmp_path / "git", password=TOKEN) as server, fake_forge() as forge:
        sha = server.create("app", {"README.md": b"hello\n", "logo.bin": bytes(range(256))})
        async with agent_rig(
            docker_client,
            database_url,
            network,
            names,
            images,
            repo_allow_private=True,
            secrets_key=new_secrets_key(),
        ) as agent:
            credential = {
                "name": "hub",
                "kind": "github",
                "username": server.username,
                "secret": TOKEN,
                "api_url": forge.api_url,
            }
            stored = await agent.tower.post("/credentials", json=credential)
            assert stored.status_code == 201, stored.text
            yield RepoRig(agent, server, forge, sha, database_url)


async def test_an_agent_edits_a_cloned_repository_and_tower_opens_the_pull_request(
    rig: RepoRig, tmp_path: Path
) -> None:
    rig.agent.fake.set_script(
        [tool("Bash", command=EDIT, description="edit the README"), text("Edited: {tool_result}")]
    )
    record = await claude_job(
        rig.agent,
        "Greet the agent in the README.",
        repo={"url": rig.server.url("app"), "ref": "main", "credential": "hub"},
        output={
            "branch": "agent/greeting",
            "pull_request": {"title": "Greet the agent", "body": "Scripted."},
        },
    )

    assert record["status"] == "completed", describe(record)
    assert record["changes"] == {"files": 2, "insertions": 2, "deletions": 1}
    # The diff applies to the original commit, on a fresh clone of it.
    diff = await rig.agent.tower.get(f"/jobs/{record['job_id']}/diff")
    assert diff.status_code == 200, diff.text
    fresh = tmp_path / "fresh"
    git("clone", "-q", rig.server.authed_url("app"), str(fresh))
    git("-C", str(fresh), "checkout", "-q", rig.sha)
    patch = tmp_path / "agent.patch"
    patch.write_bytes(diff.content)
    git("-C", str(fresh), "apply", "--check", str(patch))
    # The branch is on the git server, with the agent's change, on top of that commit.
    pushed = tmp_path / "pushed"
    git("clone", "-q", "--branch", "agent/greeting", rig.server.authed_url("app"), str(pushed))
    assert (pushed / "README.md").read_text() == "hello, agent\n"
    assert (pushed / "added.txt").read_text() == "new file\n"
    assert (pushed / "logo.bin").read_bytes() == bytes(range(256))
    assert git("-C", str(pushed), "rev-parse", "HEAD~1").strip() == rig.sha
    # The forge got the pull request, with the token, and the job says where it is.
    [call] = rig.forge.calls
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert (call.body["head"], call.body["base"]) == ("agent/greeting", "main")
    await assert_another_replica_serves(rig, record["job_id"], diff.content)
    published = record["published"]
    assert published["branch"] == "agent/greeting"
    assert published["pull_request_url"] == "https://forge.test/git/app/pull/1"
    assert published["commit"] == git("-C", str(pushed), "rev-parse", "HEAD").strip()


async def assert_another_replica_serves(rig: RepoRig, job_id: str, diff: bytes) -> None:
    """A replica that never ran the job serves its artifacts and diff (all in PostgreSQL)."""
    settings = Settings(database_url=rig.database_url, tower_runner="simulated")
    async with live_tower(settings) as url, httpx.AsyncClient(base_url=url) as other:
        assert (await other.get(f"/jobs/{job_id}/diff")).content == diff
        added = await other.get(f"/jobs/{job_id}/artifacts/added.txt")
        assert added.status_code == 200 and added.content == b"new file\n"


async def test_the_repository_credential_is_nowhere_in_the_worker(rig: RepoRig) -> None:
    tower = rig.agent.tower
    await register_shell(tower)
    engine = (await tower.get("/configs/engine/claude-code")).json()["content"]
    env = engine[engine.index("[env]") :]  # the gateway environment, as in the key search
    shell = (await tower.get("/configs/engine/shell")).json()["content"]
    put = await tower.put("/configs/engine/shell", json={"content": shell + "\n" + env})
    assert put.is_success, put.text
    source = KEY_SEARCH.replace("__KEY__", repr(TOKEN[::-1]))
    source = source.replace("__PLANTED__", repr(PLANTED[::-1]))
    rig.agent.fake.set_script([text("hello")])
    repo = {"url": rig.server.url("app"), "credential": "hub"}

    report = last_json_line(await run_job(tower, python_script(source), repo=repo))

    assert "/workspace/planted.txt" in report["found"]["planted"]  # the search finds
    assert report["searched"] > 1000
    assert report["found"]["key"] == []
    assert all(TOKEN not in value for value in report["env"].values())


async def test_a_rejected_push_fails_the_job_as_output_and_keeps_the_diff(rig: RepoRig) -> None:
    tower = rig.agent.tower
    await register_shell(tower)
    rig.server.commit_more("app", {"other.txt": b"x\n"}, branch="taken")
    record = await run_job(
        tower,
        "printf 'changed\\n' > /workspace/README.md",
        repo={"url": rig.server.url("app"), "ref": "main", "credential": "hub"},
        output={"branch": "taken"},
    )

    assert (record["status"], record["failure_reason"]) == ("failed", "output"), describe(record)
    assert "pushing" in record["error"] and TOKEN not in record["error"]
    assert record["published"]["branch"] is None
    diff = await tower.get(f"/jobs/{record['job_id']}/diff")
    assert diff.status_code == 200 and b"+changed" in diff.content
    assert rig.forge.calls == []


async def test_an_agent_that_changes_nothing_pushes_nothing(rig: RepoRig) -> None:
    tower = rig.agent.tower
    await register_shell(tower)
    record = await run_job(
        tower,
        "true",
        repo={"url": rig.server.url("app"), "credential": "hub"},
        output={"branch": "agent/nothing", "pull_request": {"title": "Nothing"}},
    )

    assert record["status"] == "completed", describe(record)
    assert record["published"]["branch"] is None
    assert "changed nothing" in record["published"]["reason"]
    assert "agent/nothing" not in git("ls-remote", rig.server.authed_url("app"))
    assert rig.forge.calls == []
