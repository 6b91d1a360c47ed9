"""Cloning a job's repository on tower's side, so the worker never needs a network route
or a credential: the tree, with its .git, travels to /workspace as a tar.

Bounded: http(s) only, the host checked like a webhook's (private targets only with
REPO_ALLOW_PRIVATE) and pinned to the checked address; a time limit; the clone's size
watched as it grows and cut at the cap. The credential reaches git in its environment
(an Authorization header in GIT_CONFIG_*), never on a command line or in a URL, and
without redirects that could carry it to another host.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import tarfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from tower.credentials.service import Credential
from tower.errors import TowerError, one_line
from tower.webhooks.target import DEFAULT_PORTS, Refused, ResolveFailed, resolve

SHA = re.compile(r"^[0-9a-f]{40}$")
# Branch and tag names git accepts, minus what could read as an option.
REF = re.compile(r"^(?!-)[A-Za-z0-9._/+-]{1,200}$")
SIZE_CHECK_SECONDS = 0.25
# Whom each kind of credential logs in as over HTTPS (the forge ignores or requires it).
FORGE_USERS = {"github": "x-access-token", "gitlab": "oauth2", "git": "git"}


class CloneFailed(TowerError):
    """The repository could not be fetched as asked: the job fails before any agent runs."""

    status_code = 422


@dataclass(frozen=True)
class RepoSource:
    url: str
    ref: str | None = None


@dataclass(frozen=True)
class Cloned:
    tar: Path
    size: int
    commit: str


@dataclass(frozen=True)
class CloneLimits:
    max_bytes: int
    timeout_seconds: float
    allow_private: bool


async def clone(
    source: RepoSource, credential: Credential | None, limits: CloneLimits, workdir: Path
) -> Cloned:
    """Clone `source` into `workdir` and tar it (with .git) as `workdir/repo.tar`."""
    pinned = await _pinned_address(source.url, limits.allow_private)
    tree = workdir / "repo"
    git = _Git(_environment(workdir, credential, pinned), limits, tree, source.url)
    await _fetch(git, source, tree)
    commit = (await git.run("-C", str(tree), "rev-parse", "HEAD")).strip()
    tar = workdir / "repo.tar"
    size = await asyncio.to_thread(_tar_tree, tree, tar, limits.max_bytes)
    return Cloned(tar, size, commit)


async def _pinned_address(url: str, allow_private: bool) -> str:
    """`host:port:address` for git's curl, so it connects where the check looked."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CloneFailed(f"repo.url must be an http(s) URL, not {url[:200]!r}")
    if parts.username or parts.password:
        raise CloneFailed("repo.url must not carry credentials: name a credential instead")
    try:
        target = await resolve(url, allow_private=allow_private, setting="REPO_ALLOW_PRIVATE")
    except (Refused, ResolveFailed) as error:
        raise CloneFailed(f"repo.url is refused: {error}") from None
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    address = target.url.host
    return f"{parts.hostname}:{port}:{f'[{address}]' if ':' in address else address}"


def _environment(workdir: Path, credential: Credential | None, pinned: str) -> dict[str, str]:
    home = workdir / "home"
    home.mkdir(mode=0o700, exist_ok=True)
    settings = {
        "protocol.allow": "never",
        "protocol.http.allow": "always",
        "protocol.https.allow": "always",
        "http.followRedirects": "false",
        "http.curloptResolve": pinned,
        "core.hooksPath": os.devnull,
        "advice.detachedHead": "false",
    }
    if credential is not None:
        settings["http.extraHeader"] = f"Authorization: Basic {_basic(credential)}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ASKPASS": "/bin/false",
        "GIT_CONFIG_COUNT": str(len(settings)),
    }
    for index, (key, value) in enumerate(settings.items()):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def _basic(credential: Credential) -> str:
    user = credential.username or FORGE_USERS.get(credential.kind, "git")
    return base64.b64encode(f"{user}:{credential.secret}".encode()).decode()


async def _fetch(git: _Git, source: RepoSource, tree: Path) -> None:
    ref = source.ref
    if ref is not None and not (SHA.match(ref) or REF.match(ref)):
        raise CloneFailed(f"repo.ref {ref[:200]!r} is not a branch, a tag or a 40-digit sha")
    if ref is not None and SHA.match(ref):
        await _fetch_commit(git, source.url, ref, tree)
        return
    branch = ["--branch", ref] if ref else []
    await git.run(
        "clone",
        "-q",
        "--depth",
        "1",
        "--single-branch",
        "--no-tags",
        *branch,
        "--",
        source.url,
        str(tree),
    )


async def _fetch_commit(git: _Git, url: str, sha: str, tree: Path) -> None:
    """A commit by its sha: shallow when the server allows it, else the whole history."""
    await git.run("init", "-q", str(tree))
    await git.run("-C", str(tree), "remote", "add", "origin", url)
    try:
        await git.run("-C", str(tree), "fetch", "-q", "--depth", "1", "origin", sha)
    except CloneFailed:
        await git.run("-C", str(tree), "fetch", "-q", "origin")
    await git.run("-C", str(tree), "checkout", "-q", "--detach", sha)


class _Git:
    """git with the job's environment, its time limit and a watch on the tree's size."""

    def __init__(self, env: dict[str, str], limits: CloneLimits, tree: Path, url: str) -> None:
        self.env = env
        self.limits = limits
        self.tree = tree
        self.url = url

    async def run(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "git",
            *args,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        watch = asyncio.create_task(self._watch_size(process))
        try:
            async with asyncio.timeout(self.limits.timeout_seconds):
                stdout, stderr = await process.communicate()
        except TimeoutError:
            raise CloneFailed(
                f"cloning {self.url}: took longer than {self.limits.timeout_seconds:.0f} s"
            ) from None
        finally:
            watch.cancel()
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        if watch.done() and not watch.cancelled() and watch.result():
            raise CloneFailed(f"cloning {self.url}: larger than {self.limits.max_bytes} bytes")
        if process.returncode != 0:
            raise CloneFailed(f"cloning {self.url}: {_last_line(stderr)}")
        return stdout.decode("utf-8", "replace")

    async def _watch_size(self, process: asyncio.subprocess.Process) -> bool:
        while True:
            await asyncio.sleep(SIZE_CHECK_SECONDS)
            if await asyncio.to_thread(_tree_size, self.tree) > self.limits.max_bytes:
                process.kill()
                return True


def _tree_size(root: Path) -> int:
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


def _tar_tree(tree: Path, tar: Path, max_bytes: int) -> int:
    if _tree_size(tree) > max_bytes:
        raise CloneFailed(f"the repository is larger than {max_bytes} bytes")
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as archive:
        for entry in sorted(tree.iterdir()):
            archive.add(entry, arcname=entry.name, filter=_owned)
    return tar.stat().st_size


def _owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


# git asks for a user name when the server answers 401 (prompts are off here).
REFUSED_CREDENTIAL = ("could not read Username", "Authentication failed")


def _last_line(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace")
    if any(sign in text for sign in REFUSED_CREDENTIAL):
        return "authentication failed: the server refused the credential, or needs one"
    lines = [line for line in text.splitlines() if line.strip()]
    return one_line(Exception(lines[-1] if lines else "git failed"), 300)
