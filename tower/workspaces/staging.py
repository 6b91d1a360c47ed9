"""Staging a claimed job's workspace on tower's side: its repository cloned (with the
job's credential, which never leaves tower) and tarred as the workspace's root, then each
upload it names copied out of PostgreSQL into a private temporary file, a batch at a time
(never whole in memory), for the runner to carry into the worker's bundle. The caller
removes it all once the run is over (`Staged.discard`), whatever way it ends; the clone
stays until then, for publishing the agent's changes from it."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from tower.artifacts import service as artifacts
from tower.credentials import service as credentials
from tower.db.pool import Pool
from tower.errors import TowerError
from tower.execution.runner import ClaimedJob, InputKind, WorkspaceInput
from tower.settings import Settings, memory_bytes
from tower.uploads import service as uploads
from tower.workspaces import queries
from tower.workspaces.git import GitLimits
from tower.workspaces.repo import Cloned, RepoSource, clone


class StagingFailed(TowerError):
    """An input cannot be staged (its upload is gone): the job fails, nothing runs."""


@dataclass(frozen=True)
class Staged:
    inputs: tuple[WorkspaceInput, ...]
    seconds: float
    # The job's repository, cloned (its tree is kept for publishing); None without one.
    repo: Cloned | None = None
    workdir: Path | None = None

    @property
    def size(self) -> int:
        return sum(staged.size for staged in self.inputs)

    @property
    def commit(self) -> str | None:
        return self.repo.commit if self.repo else None

    def summary(self) -> str:
        cloned = f"cloned {self.repo.git.url} at {self.repo.commit[:12]}; " if self.repo else ""
        return (
            f"parpaing: {cloned}staged {len(self.inputs)} input(s), {self.size} bytes,"
            f" in {self.seconds:.2f} s\n"
        )

    def discard(self) -> None:
        discard(self.inputs)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def has_inputs(job: ClaimedJob) -> bool:
    """Whether the job names inputs or a repository, or continues a session (its stored
    request says so)."""
    request = job.request
    return bool(request.get("inputs") or request.get("repo") or request.get("session"))


async def stage(pool: Pool, job: ClaimedJob, settings: Settings) -> Staged:
    """The job's repository (tarred, first: it is the workspace's root) and its inputs in
    temporary files, in the request's order. On any failure (or cancellation) what was
    made so far is removed before the error goes on."""
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="parpaing-workspace-"))
    staged: list[WorkspaceInput] = []
    try:
        session = await _session_state(pool, job)
        if session is not None:
            staged.append(session)
        repo = await _clone(pool, job, settings, workdir)
        if repo is not None:
            staged.append(WorkspaceInput("", "tar", None, repo.tar, repo.size))
        async with pool.acquire() as connection:
            rows = await connection.fetch(queries.SELECT_JOB_INPUTS, job.job_id)
        for row in rows:
            staged.append(await _stage_one(pool, job, row))
    except BaseException:
        Staged(tuple(staged), 0.0, None, workdir).discard()
        raise
    return Staged(tuple(staged), time.monotonic() - started, repo, workdir)


async def _session_state(pool: Pool, job: ClaimedJob) -> WorkspaceInput | None:
    """A continued turn's parent state (workspace and engine state), first: the
    workspace's root, as a repository's clone is for a first turn."""
    link = job.request.get("session")
    if not link:
        return None
    parent = link["parent_job_id"]
    row = await pool.fetchrow(queries.SELECT_SESSION_STATE, parent)
    if row is None:
        raise StagingFailed(f"the session state of job {parent} expired before this turn started")
    descriptor, name = tempfile.mkstemp(prefix="parpaing-session-")
    local = Path(name)
    try:
        written = 0
        with os.fdopen(descriptor, "wb") as file:
            async for piece in artifacts.read(pool, row["artifact_id"], 0, row["size"]):
                written += await asyncio.to_thread(file.write, piece)
        if written != row["size"]:
            raise StagingFailed(f"the session state of job {parent} was deleted while staged")
    except BaseException:
        _remove(local)
        raise
    return WorkspaceInput("", "session", None, local, row["size"])


async def _clone(pool: Pool, job: ClaimedJob, settings: Settings, workdir: Path) -> Cloned | None:
    request = job.request.get("repo")
    if not request:
        return None
    name = request.get("credential")
    secrets_key = settings.secrets_key.get_secret_value()
    credential = None
    if name:
        credential = await credentials.reveal_for_job(pool, secrets_key, name, job.job_id)
    limits = GitLimits(
        max_bytes=memory_bytes(settings.bundle_volume_size) or 0,
        timeout_seconds=settings.repo_clone_timeout_seconds,
        allow_private=settings.repo_allow_private,
    )
    return await clone(RepoSource(request["url"], request.get("ref")), credential, limits, workdir)


async def _stage_one(pool: Pool, job: ClaimedJob, row: Any) -> WorkspaceInput:
    position = row["position"]
    if row["kind"] is None:
        raise StagingFailed(f"{_named(job, position)} was deleted before the job started")
    descriptor, name = tempfile.mkstemp(prefix="parpaing-input-")
    local = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as file:
            written = await uploads.write_to(pool, row["upload_id"], file)
        if written != row["size"]:
            raise StagingFailed(f"{_named(job, position)} was deleted while it was staged")
    except BaseException:
        _remove(local)
        raise
    kind = cast(InputKind, row["kind"])
    return WorkspaceInput(row["path"], kind, row["filename"], local, written)


def _named(job: ClaimedJob, position: int) -> str:
    """inputs[n] and its upload's id, from the request (the row may have lost the id)."""
    inputs = job.request.get("inputs") or []
    upload = inputs[position].get("upload") if position < len(inputs) else None
    return f"inputs[{position}] (upload {upload!r})"


def discard(inputs: tuple[WorkspaceInput, ...] | list[WorkspaceInput]) -> None:
    for staged in inputs:
        _remove(staged.local)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
