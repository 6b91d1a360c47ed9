"""The agent's changes onto the forge: a patch committed on a new branch of tower's clone,
pushed to a real git server (git http-backend behind nginx) with the job's credential,
and a pull request (GitHub) or merge request (GitLab) opened on a scripted forge."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_forge import FakeForge, fake_forge
from tests.support.git_server import GitServer, git, git_server
from tower.credentials.service import Credential
from tower.workspaces.forge import PullRequest
from tower.workspaces.git import GitLimits, RepoFailed
from tower.workspaces.publish import Author, publish
from tower.workspaces.repo import Cloned, RepoSource, clone

LIMITS = GitLimits(max_bytes=64 << 20, timeout_seconds=60, allow_private=True)
AUTHOR = Author("Parpaing", "parpaing@example.invalid")
TOKEN = "forge-token-51e0"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with git_server(tmp_path / "git", password=TOKEN) as running:
        yield running


@pytest.fixture
def forge() -> Iterator[FakeForge]:
    with fake_forge() as running:
        yield running


def credential(server: GitServer, kind: str, api_url: str | None) -> Credential:
    return Credential("deploy", kind, server.username, api_url, TOKEN)


async def cloned(server: GitServer, tmp_path: Path, cred: Credential) -> Cloned:
    server.create("app", {"README.md": b"hello\n", "logo.bin": bytes(range(256))})
    workdir = tmp_path / "stage"
    workdir.mkdir()
    return await clone(RepoSource(server.url("app"), "main"), cred, LIMITS, workdir)


def agent_changes(tree: Path, patch: Path) -> None:
    """What an agent does in /workspace, and the binary diff the worker sends back."""
    (tree / "README.md").write_text("hello, world\n")
    (tree / "new.txt").write_text("added\n")
    (tree / "logo.bin").write_bytes(bytes(reversed(range(256))))
    git("-C", str(tree), "add", "-A")
    patch.write_bytes(
        subprocess.run(
            ["git", "-C", str(tree), "diff", "--cached", "--binary", "HEAD"],
            capture_output=True,
            check=True,
        ).stdout
    )
    git("-C", str(tree), "reset", "-q", "--hard", "HEAD")


async def test_a_branch_is_pushed_and_a_github_pull_request_opened(
    server: GitServer, forge: FakeForge, tmp_path: Path
) -> None:
    cred = credential(server, "github", forge.api_url)
    repo = await cloned(server, tmp_path, cred)
    patch = tmp_path / "changes.patch"
    agent_changes(repo.git.tree, patch)
    published = await publish(
        repo.git,
        patch,
        "agent/fix-1",
        AUTHOR,
        "Fix the greeting",
        cred,
        PullRequest("Fix the greeting", "Done by an agent."),
        "main",
        allow_private=True,
    )
    check = tmp_path / "check"
    git("clone", "-q", "--branch", "agent/fix-1", server.authed_url("app"), str(check))
    assert (check / "README.md").read_text() == "hello, world\n"
    assert (check / "new.txt").read_text() == "added\n"
    assert (check / "logo.bin").read_bytes() == bytes(reversed(range(256)))
    assert git("-C", str(check), "log", "-1", "--format=%an <%ae>").strip() == (
        "Parpaing <parpaing@example.invalid>"
    )
    [call] = forge.calls
    assert call.path == "/api/repos/git/app/pulls"
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert call.body == {
        "title": "Fix the greeting",
        "body": "Done by an agent.",
        "head": "agent/fix-1",
        "base": "main",
    }
    assert published.pull_request is not None
    assert published.pull_request.url == "https://forge.test/git/app/pull/1"
    assert published.commit == git("-C", str(check), "rev-parse", "HEAD").strip()


async def test_gitlab_gets_a_merge_request_into_the_default_branch(
    server: GitServer, forge: FakeForge, tmp_path: Path
) -> None:
    cred = credential(server, "gitlab", forge.api_url)
    repo = await cloned(server, tmp_path, cred)
    patch = tmp_path / "changes.patch"
    agent_changes(repo.git.tree, patch)
    published = await publish(
        repo.git,
        patch,
        "agent/fix-2",
        AUTHOR,
        "Fix",
        cred,
        PullRequest("Fix", "body"),
        None,
        allow_private=True,
    )
    [call] = forge.calls
    assert call.path == "/api/projects/git%2Fapp/merge_requests"
    assert call.headers["private-token"] == TOKEN
    assert call.body["target_branch"] == "main" and call.body["source_branch"] == "agent/fix-2"
    assert published.pull_request is not None and published.pull_request.url.endswith("/mr/1")


async def test_a_rejected_push_fails_with_gits_message(
    server: GitServer, forge: FakeForge, tmp_path: Path
) -> None:
    cred = credential(server, "git", None)
    repo = await cloned(server, tmp_path, cred)
    patch = tmp_path / "changes.patch"
    agent_changes(repo.git.tree, patch)
    server.commit_more("app", {"other.txt": b"x"}, branch="taken")  # the branch exists
    with pytest.raises(RepoFailed, match="pushing") as failure:
        await publish(repo.git, patch, "taken", AUTHOR, "m", cred, None, None, True)
    assert TOKEN not in failure.value.message


async def test_a_refused_pull_request_fails_with_the_forges_message(
    server: GitServer, forge: FakeForge, tmp_path: Path
) -> None:
    cred = credential(server, "github", forge.api_url)
    repo = await cloned(server, tmp_path, cred)
    patch = tmp_path / "changes.patch"
    agent_changes(repo.git.tree, patch)
    forge.refusal = (422, {"message": "Validation Failed", "errors": [{"code": "custom"}]})
    with pytest.raises(RepoFailed, match="HTTP 422: Validation Failed"):
        await publish(
            repo.git, patch, "agent/x", AUTHOR, "m", cred, PullRequest("t", "b"), "main", True
        )
    # The branch went out before the forge refused: it stays, as the job record will say.
    assert "agent/x" in git("ls-remote", server.authed_url("app"))


@pytest.mark.parametrize("branch", ["-x", "a..b", "x.lock", "a" * 40 + "", "with space"])
async def test_bad_branch_names_are_refused(
    server: GitServer, forge: FakeForge, tmp_path: Path, branch: str
) -> None:
    cred = credential(server, "git", None)
    repo = await cloned(server, tmp_path, cred)
    with pytest.raises(RepoFailed, match="branch"):
        await publish(repo.git, tmp_path / "none", branch, AUTHOR, "m", cred, None, None, True)
