"""Repository jobs through real HTTP on real PostgreSQL: `repo` and `output` checked at
submit (the credential exists and fits), echoed in the record, and the repository cloned
at claim from a real git server (git http-backend behind nginx), its failures failing
the job as `input` before anything runs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cli import parpaing
from tests.support.git_server import GitServer, git_server
from tests.support.live import client_for, live_tower
from tower.execution.simulated import SimulatedRunner
from tower.settings import Settings, new_secrets_key

KEY = "job-repo-test-key"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with git_server(tmp_path / "git") as running:
        yield running


async def tower(database_url: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    configured = Settings(
        database_url=database_url,
        tower_runner="simulated",
        tower_api_key=KEY,
        secrets_key=new_secrets_key(),
        **settings,
    )
    async with (
        live_tower(configured, SimulatedRunner()) as url,
        client_for(url, KEY) as client,
    ):
        yield client


@pytest.fixture
async def client(database_url: str, server: GitServer) -> AsyncIterator[httpx.AsyncClient]:
    async for running in tower(database_url, repo_allow_private=True):
        for name, kind, password in (
            ("repo-git", "git", server.password),
            ("repo-hub", "github", server.password),
            ("wrong", "git", "not-the-password"),
        ):
            body = {"name": name, "kind": kind, "username": server.username, "secret": password}
            assert (await running.post("/credentials", json=body)).status_code == 201
        yield running


def job(**fields: Any) -> dict[str, Any]:
    return {"agent_id": "tester", "engine": "claude-code", "prompt": "echo done", **fields}


def error_at(response: httpx.Response) -> tuple[list[Any], str]:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    return detail["loc"], detail["msg"]


async def finished(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/jobs/{job_id}/wait", params={"timeout": 60})
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


async def test_a_repository_job_is_cloned_then_run(
    client: httpx.AsyncClient, server: GitServer
) -> None:
    sha = server.create("app", {"README.md": b"hi\n"})
    repo = {"url": server.url("app"), "ref": "main", "credential": "repo-git"}
    submitted = await client.post("/jobs", json=job(repo=repo, output={"branch": "agent/x"}))
    assert submitted.status_code == 202, submitted.text
    record = await finished(client, submitted.json()["job_id"])
    assert record["status"] == "completed", record
    assert record["repo"] == repo and record["output"] == {
        "branch": "agent/x",
        "pull_request": None,
    }
    events = await client.get(f"/jobs/{record['job_id']}/events", params={"last_event_id": 0})
    assert f"at {sha[:12]}" in events.text


async def test_a_clone_that_fails_fails_the_job_as_input(
    client: httpx.AsyncClient, server: GitServer
) -> None:
    server.create("app", {"README.md": b"hi\n"})
    cases = [
        ({"url": server.url("app"), "credential": "wrong"}, "authentication failed"),
        ({"url": server.url("app"), "ref": "missing", "credential": "repo-git"}, "missing"),
        ({"url": server.url("nowhere"), "credential": "repo-git"}, "cloning"),
    ]
    for repo, reason in cases:
        submitted = await client.post("/jobs", json=job(repo=repo))
        record = await finished(client, submitted.json()["job_id"])
        assert (record["status"], record["failure_reason"]) == ("failed", "input"), record
        assert reason in record["error"], record["error"]
        assert "not-the-password" not in record["error"]


@pytest.mark.parametrize(
    ("fields", "loc", "message"),
    [
        (
            {"repo": {"url": "http://x.example/r.git", "credential": "nope"}},
            ["repo", "credential"],
            "unknown credential",
        ),
        ({"output": {"branch": "b"}}, [], "output needs repo"),
        (
            {
                "repo": {"url": "http://x.example/r.git"},
                "output": {"branch": "b", "pull_request": {"title": "t"}},
            },
            [],
            "needs repo.credential",
        ),
        (
            {
                "repo": {"url": "http://x.example/r.git", "credential": "repo-git"},
                "output": {"branch": "b", "pull_request": {"title": "t"}},
            },
            ["repo", "credential"],
            "is a git one",
        ),
        (
            {"repo": {"url": "http://x.example/r.git", "ref": "--upload-pack=x"}},
            ["repo", "ref"],
            "not a branch",
        ),
        (
            {"repo": {"url": "http://x.example/r.git"}, "output": {"branch": "a..b"}},
            ["output", "branch"],
            "branch",
        ),
        ({"repo": {"url": "ftp://x.example/r.git"}}, ["repo", "url"], ""),
    ],
)
async def test_bad_repository_fields_are_422s_naming_them(
    client: httpx.AsyncClient, fields: dict[str, Any], loc: list[str], message: str
) -> None:
    where, why = error_at(await client.post("/jobs", json=job(**fields)))
    assert where[1 : 1 + len(loc)] == loc, where
    assert message in why


async def test_a_private_repository_host_is_refused_unless_allowed(database_url: str) -> None:
    async for client in tower(database_url):
        response = await client.post("/jobs", json=job(repo={"url": "http://127.0.0.1/r.git"}))
        where, why = error_at(response)
        assert where == ["body", "repo", "url"] and "REPO_ALLOW_PRIVATE" in why


async def test_the_cli_submits_files_and_a_repository_with_its_output(
    client: httpx.AsyncClient, server: GitServer, tmp_path: Path
) -> None:
    server.create("app", {"README.md": b"hi\n"})
    notes = tmp_path / "notes.txt"
    notes.write_text("notes\n")
    url = str(client.base_url)
    args = ["submit", "--agent", "cli", "--engine", "claude-code", "--prompt", "echo done"]
    args += ["--file", f"{notes}:docs", "--repo", f"{server.url('app')}@main"]
    args += ["--credential", "repo-hub", "--branch", "agent/cli", "--pr-title", "From the CLI"]
    ran = await parpaing(url, *args, api_key=KEY)
    assert ran.code == 0, ran.stderr
    record = await finished(client, ran.stdout.strip())
    assert record["repo"] == {"url": server.url("app"), "ref": "main", "credential": "repo-hub"}
    assert record["output"]["branch"] == "agent/cli"
    assert record["output"]["pull_request"] == {"title": "From the CLI", "body": ""}
    assert [item["path"] for item in record["inputs"]] == ["docs"]
    lonely = await parpaing(
        url, "submit", "--agent", "a", "--engine", "e", "--branch", "b", api_key=KEY
    )
    assert lonely.code == 1 and "need --repo" in lonely.stderr
