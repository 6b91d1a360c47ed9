"""The agent's changes out of the workspace and onto the forge: applied to tower's own
clone of the input commit, committed on a new branch (author from settings), pushed with
the job's credential from the same checked host, then a pull request when asked. Tower
does this, never the worker, so the credential never reaches a container."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tower.credentials.service import Credential
from tower.workspaces.forge import Opened, PullRequest, open_pull_request
from tower.workspaces.git import Git, RepoFailed
from tower.workspaces.repo import REF, SHA


@dataclass(frozen=True)
class Author:
    name: str
    email: str


@dataclass(frozen=True)
class Published:
    branch: str
    commit: str
    pull_request: Opened | None


def check_branch(branch: str) -> None:
    if not REF.match(branch) or SHA.match(branch) or ".." in branch or branch.endswith(".lock"):
        raise RepoFailed(f"output.branch {branch[:200]!r} is not a usable branch name")


async def publish(
    git: Git,
    patch: Path,
    branch: str,
    author: Author,
    message: str,
    credential: Credential | None,
    pull: PullRequest | None,
    base: str | None,
    allow_private: bool,
) -> Published:
    """Commit `patch` (a binary git diff against the cloned commit) on `branch`, push it,
    and open a pull request into `base` (the cloned branch, else the remote's default)."""
    check_branch(branch)
    await git.in_tree("checkout", "-q", "-b", branch, doing="committing")
    await git.in_tree("apply", "--index", "--binary", str(patch), doing="applying the changes")
    commit = await _commit(git, author, message)
    await git.in_tree("push", "-q", "origin", f"HEAD:refs/heads/{branch}", doing="pushing")
    if pull is None:
        return Published(branch, commit, None)
    if credential is None:
        raise RepoFailed("a pull request needs the job's repository credential")
    target = base or await default_branch(git)
    opened = await open_pull_request(credential, git.url, branch, target, pull, allow_private)
    return Published(branch, commit, opened)


async def _commit(git: Git, author: Author, message: str) -> str:
    identity = ["-c", f"user.name={author.name}", "-c", f"user.email={author.email}"]
    await git.in_tree(*identity, "commit", "-q", "--no-verify", "-m", message, doing="committing")
    return (await git.in_tree("rev-parse", "HEAD", doing="committing")).strip()


async def default_branch(git: Git) -> str:
    """The remote's HEAD branch (what a pull request targets when the job named a sha)."""
    answer = await git.in_tree("ls-remote", "--symref", "origin", "HEAD", doing="pushing")
    for line in answer.splitlines():
        if line.startswith("ref: refs/heads/"):
            return line.removeprefix("ref: refs/heads/").split("\t", 1)[0]
    raise RepoFailed("the repository names no default branch to open the pull request into")
