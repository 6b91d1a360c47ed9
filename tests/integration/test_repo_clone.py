"""Cloning a job's repository on tower's side, from a real git server (git http-backend
behind nginx with basic auth): by branch and by sha, with a credential that never shows
in a URL or a message, bounded in size and time, and refused for hosts it may not reach."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.git_server import GitServer, git_server
from tower.credentials.service import Credential
from tower.workspaces.git import GitLimits as CloneLimits
from tower.workspaces.git import RepoFailed as CloneFailed
from tower.workspaces.repo import RepoSource, clone

MiB = 1 << 20
ALLOWED = CloneLimits(max_bytes=64 * MiB, timeout_seconds=60, allow_private=True)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with git_server(tmp_path / "git") as running:
        yield running


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "stage"
    path.mkdir()
    return path


def credential_for(server: GitServer, secret: str | None = None) -> Credential:
    return Credential("ci", "git", server.username, None, secret or server.password)


def members(tar: Path) -> dict[str, bytes]:
    with tarfile.open(tar) as archive:
        return {
            m.name: archive.extractfile(m).read()  # type: ignore[union-attr]
            for m in archive
            if m.isfile()
        }


async def test_a_branch_is_cloned_with_its_history_root(server: GitServer, workdir: Path) -> None:
    sha = server.create("app", {"README.md": b"hello\n", "src/a.py": b"print(1)\n"})
    cloned = await clone(
        RepoSource(server.url("app"), "main"), credential_for(server), ALLOWED, workdir
    )
    files = members(cloned.tar)
    assert cloned.commit == sha
    assert files["README.md"] == b"hello\n" and files["src/a.py"] == b"print(1)\n"
    assert any(name.startswith(".git/") for name in files)
    assert cloned.size == cloned.tar.stat().st_size


async def test_a_commit_is_cloned_by_its_sha(server: GitServer, workdir: Path) -> None:
    first = server.create("app", {"v.txt": b"1\n"})
    server.commit_more("app", {"v.txt": b"2\n"})
    cloned = await clone(
        RepoSource(server.url("app"), first), credential_for(server), ALLOWED, workdir
    )
    assert cloned.commit == first
    assert members(cloned.tar)["v.txt"] == b"1\n"


async def test_a_wrong_secret_fails_without_showing_it(server: GitServer, workdir: Path) -> None:
    server.create("app", {"a": b"a"})
    wrong = "wrong-secret-7f3a"
    with pytest.raises(CloneFailed, match="authentication failed") as failure:
        await clone(RepoSource(server.url("app")), credential_for(server, wrong), ALLOWED, workdir)
    assert wrong not in failure.value.message


async def test_no_credential_for_a_private_repository_fails(
    server: GitServer, workdir: Path
) -> None:
    server.create("app", {"a": b"a"})
    with pytest.raises(CloneFailed, match="needs one"):
        await clone(RepoSource(server.url("app")), None, ALLOWED, workdir)


async def test_a_missing_branch_fails_naming_it(server: GitServer, workdir: Path) -> None:
    server.create("app", {"a": b"a"})
    with pytest.raises(CloneFailed, match="nope"):
        await clone(RepoSource(server.url("app"), "nope"), credential_for(server), ALLOWED, workdir)


async def test_a_repository_past_the_cap_fails(server: GitServer, workdir: Path) -> None:
    import os

    server.create("big", {"blob.bin": os.urandom(3 * MiB)})
    small = CloneLimits(max_bytes=MiB, timeout_seconds=60, allow_private=True)
    with pytest.raises(CloneFailed, match="larger than"):
        await clone(RepoSource(server.url("big")), credential_for(server), small, workdir)


async def test_a_clone_past_its_time_fails(server: GitServer, workdir: Path) -> None:
    server.create("app", {"a": b"a"})
    hasty = CloneLimits(max_bytes=64 * MiB, timeout_seconds=0.001, allow_private=True)
    with pytest.raises(CloneFailed, match="took longer than"):
        await clone(RepoSource(server.url("app")), credential_for(server), hasty, workdir)


async def test_a_private_host_is_refused_unless_allowed(server: GitServer, workdir: Path) -> None:
    strict = CloneLimits(max_bytes=64 * MiB, timeout_seconds=60, allow_private=False)
    with pytest.raises(CloneFailed, match="REPO_ALLOW_PRIVATE"):
        await clone(RepoSource(server.url("app")), credential_for(server), strict, workdir)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("file:///etc", "http"),
        ("ssh://git@example.com/x.git", "http"),
        ("http://user:pw@127.0.0.1/x.git", "must not carry credentials"),
    ],
)
async def test_other_schemes_and_inline_credentials_are_refused(
    url: str, problem: str, workdir: Path
) -> None:
    with pytest.raises(CloneFailed, match=problem):
        await clone(RepoSource(url), None, ALLOWED, workdir)


async def test_a_ref_that_reads_as_an_option_is_refused(server: GitServer, workdir: Path) -> None:
    with pytest.raises(CloneFailed, match="is not a branch"):
        await clone(RepoSource(server.url("app"), "--upload-pack=touch"), None, ALLOWED, workdir)
