"""Cloning a job's repository on tower's side, so the worker never needs a network route
or a credential: the tree, with its .git, travels to /workspace as a tar.

Bounded: http(s) only, the host checked like a webhook's (private targets only with
REPO_ALLOW_PRIVATE) and pinned to the checked address (tower/workspaces/git.py); a time
limit; the clone's size watched as it grows and cut at the cap.
"""

from __future__ import annotations

import asyncio
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tower.credentials.service import Credential
from tower.workspaces.git import (
    Git,
    GitLimits,
    RepoFailed,
    environment,
    pinned_address,
    tree_size,
)

SHA = re.compile(r"^[0-9a-f]{40}$")
# Branch and tag names git accepts, minus what could read as an option.
REF = re.compile(r"^(?!-)[A-Za-z0-9._/+-]{1,200}$")


@dataclass(frozen=True)
class RepoSource:
    url: str
    ref: str | None = None


@dataclass(frozen=True)
class Cloned:
    git: Git  # for pushing from the same tree, with the same checked host
    tar: Path
    size: int
    commit: str


async def clone(
    source: RepoSource, credential: Credential | None, limits: GitLimits, workdir: Path
) -> Cloned:
    """Clone `source` into `workdir/repo` and tar it (with .git) as `workdir/repo.tar`."""
    pinned = await pinned_address(source.url, limits.allow_private)
    git = Git(environment(workdir, credential, pinned), limits, workdir / "repo", source.url)
    await _fetch(git, source)
    commit = (await git.in_tree("rev-parse", "HEAD", doing="cloning")).strip()
    tar = workdir / "repo.tar"
    size = await asyncio.to_thread(_tar_tree, git.tree, tar, limits.max_bytes)
    return Cloned(git, tar, size, commit)


def check_ref(ref: str | None) -> None:
    if ref is not None and not (SHA.match(ref) or REF.match(ref)):
        raise RepoFailed(f"repo.ref {ref[:200]!r} is not a branch, a tag or a 40-digit sha")


async def _fetch(git: Git, source: RepoSource) -> None:
    check_ref(source.ref)
    if source.ref is not None and SHA.match(source.ref):
        await _fetch_commit(git, source.ref)
        return
    branch = ["--branch", source.ref] if source.ref else []
    clone = ["clone", "-q", "--depth", "1", "--single-branch", "--no-tags", *branch]
    await git.run(*clone, "--", source.url, str(git.tree))


async def _fetch_commit(git: Git, sha: str) -> None:
    """A commit by its sha: shallow when the server allows it, else the whole history."""
    await git.run("init", "-q", str(git.tree))
    await git.in_tree("remote", "add", "origin", git.url, doing="cloning")
    try:
        await git.in_tree("fetch", "-q", "--depth", "1", "origin", sha, doing="cloning")
    except RepoFailed:
        await git.in_tree("fetch", "-q", "origin", doing="cloning")
    await git.in_tree("checkout", "-q", "--detach", sha, doing="cloning")


def _tar_tree(tree: Path, tar: Path, max_bytes: int) -> int:
    if tree_size(tree) > max_bytes:
        raise RepoFailed(f"the repository is larger than {max_bytes} bytes")
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as archive:
        for entry in sorted(tree.iterdir()):
            archive.add(entry, arcname=entry.name, filter=_owned)
    return tar.stat().st_size


def _owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
