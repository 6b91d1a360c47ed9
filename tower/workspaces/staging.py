"""Staging a claimed job's inputs: each upload it names is copied out of PostgreSQL into
a private temporary file, a chunk at a time (never whole in memory), for the runner to
carry into the worker's bundle. The caller removes the files once the run is over
(`discard`), whatever way it ends."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from tower.db.pool import Pool
from tower.errors import TowerError
from tower.execution.runner import ClaimedJob, InputKind, WorkspaceInput
from tower.uploads import service as uploads
from tower.workspaces import queries


class StagingFailed(TowerError):
    """An input cannot be staged (its upload is gone): the job fails, nothing runs."""


@dataclass(frozen=True)
class Staged:
    inputs: tuple[WorkspaceInput, ...]
    seconds: float

    @property
    def size(self) -> int:
        return sum(staged.size for staged in self.inputs)

    def summary(self) -> str:
        return (
            f"parpaing: staged {len(self.inputs)} input(s), {self.size} bytes,"
            f" in {self.seconds:.2f} s\n"
        )


def has_inputs(job: ClaimedJob) -> bool:
    """Whether the job names inputs (its stored request says so: no query needed)."""
    return bool(job.request.get("inputs"))


async def stage(pool: Pool, job: ClaimedJob) -> Staged:
    """The job's inputs in temporary files, in the request's order. On any failure (or
    cancellation) the files made so far are removed before the error goes on."""
    started = time.monotonic()
    async with pool.acquire() as connection:
        rows = await connection.fetch(queries.SELECT_JOB_INPUTS, job.job_id)
    staged: list[WorkspaceInput] = []
    try:
        for row in rows:
            staged.append(await _stage_one(pool, job, row))
    except BaseException:
        discard(staged)
        raise
    return Staged(tuple(staged), time.monotonic() - started)


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
