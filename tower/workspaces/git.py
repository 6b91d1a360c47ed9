"""git as tower runs it for a job: against one checked, pinned host, with the job's
credential in the environment only, a time limit, and a size watch on the tree.

The credential reaches git as an Authorization header in GIT_CONFIG_* (never on a
command line, where `ps` shows it, nor in a URL, where git's messages would), and
redirects are not followed, so it cannot be carried to another host. No user or system
configuration is read, and only http(s) is spoken.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from tower.credentials.service import Credential
from tower.errors import TowerError, one_line
from tower.webhooks.target import DEFAULT_PORTS, Refused, ResolveFailed, resolve

SIZE_CHECK_SECONDS = 0.25
# Whom each kind of credential logs in as over HTTPS (forges ignore or require it).
FORGE_USERS = {"github": "x-access-token", "gitlab": "oauth2", "git": "git"}
# git asks for a user name when the server answers 401 (prompts are off here).
REFUSED_CREDENTIAL = ("could not read Username", "Authentication failed")


class RepoFailed(TowerError):
    """A clone, push or pull request that could not be done as asked; the message is
    git's or the forge's, never the credential."""

    status_code = 422


@dataclass(frozen=True)
class GitLimits:
    max_bytes: int
    timeout_seconds: float
    allow_private: bool


async def pinned_address(url: str, allow_private: bool) -> str:
    """`host:port:address` for git's curl (http.curloptResolve), so it connects to the
    address that was checked, whatever DNS says a moment later."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RepoFailed(f"repo.url must be an http(s) URL, not {url[:200]!r}")
    if parts.username or parts.password:
        raise RepoFailed("repo.url must not carry credentials: name a credential instead")
    try:
        target = await resolve(url, allow_private=allow_private, setting="REPO_ALLOW_PRIVATE")
    except (Refused, ResolveFailed) as error:
        raise RepoFailed(f"repo.url is refused: {error}") from None
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    address = target.url.host
    return f"{parts.hostname}:{port}:{f'[{address}]' if ':' in address else address}"


def environment(workdir: Path, credential: Credential | None, pinned: str) -> dict[str, str]:
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


class Git:
    """git with the job's environment, its time limit and a watch on the tree's size."""

    def __init__(self, env: dict[str, str], limits: GitLimits, tree: Path, url: str) -> None:
        self.env = env
        self.limits = limits
        self.tree = tree
        self.url = url

    async def run(self, *args: str, doing: str = "cloning") -> str:
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
            seconds = self.limits.timeout_seconds
            raise RepoFailed(f"{doing} {self.url}: took longer than {seconds:.0f} s") from None
        finally:
            watch.cancel()
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        if watch.done() and not watch.cancelled() and watch.result():
            raise RepoFailed(f"{doing} {self.url}: larger than {self.limits.max_bytes} bytes")
        if process.returncode != 0:
            raise RepoFailed(f"{doing} {self.url}: {last_line(stderr)}")
        return stdout.decode("utf-8", "replace")

    async def in_tree(self, *args: str, doing: str) -> str:
        return await self.run("-C", str(self.tree), *args, doing=doing)

    async def _watch_size(self, process: asyncio.subprocess.Process) -> bool:
        while True:
            await asyncio.sleep(SIZE_CHECK_SECONDS)
            if await asyncio.to_thread(tree_size, self.tree) > self.limits.max_bytes:
                process.kill()
                return True


def tree_size(root: Path) -> int:
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


def last_line(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace")
    if any(sign in text for sign in REFUSED_CREDENTIAL):
        return "authentication failed: the server refused the credential, or needs one"
    lines = [line for line in text.splitlines() if line.strip()]
    return one_line(Exception(lines[-1] if lines else "git failed"), 300)
