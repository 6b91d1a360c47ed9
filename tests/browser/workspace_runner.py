"""The simulated runner, sending back what a worker would: the job's staged workspace
(its cloned repository, its uploads) unpacked in a scratch directory, the edits a test
scripted for the job's agent made there, and the artifacts frame built by the worker's
own code (worker/artifacts.py: its snapshot, its binary-safe git diff, its limits). Tower
then stores it, serves it and publishes the diff exactly as it does a real worker's."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from tower.execution.runner import ClaimedJob, Output, RunOutcome, WorkspaceInput
from tower.execution.simulated import SimulatedRunner
from worker import artifacts as worker_artifacts

Edit = Callable[[Path], None]


@dataclasses.dataclass(frozen=True)
class Script:
    """What the agent does in /workspace, and the artifact limit (MAX_ARTIFACT_BYTES)."""

    edit: Edit
    limit: int = 64 << 20


class WorkspaceRunner(SimulatedRunner):
    def __init__(self, scratch: Path) -> None:
        super().__init__()
        self.scratch = scratch
        self.scripts: dict[str, Script] = {}

    async def run(self, job: ClaimedJob, output: Output) -> RunOutcome:
        outcome = await super().run(job, output)
        script = self.scripts.get(job.agent_id)
        if script is None:
            return outcome
        return dataclasses.replace(outcome, artifacts=self._artifacts(job, script))

    def _artifacts(self, job: ClaimedJob, script: Script) -> Path:
        scratch = Path(tempfile.mkdtemp(prefix=f"{job.job_id}-", dir=self.scratch))
        workspace = scratch / "workspace"
        workspace.mkdir()
        for staged in job.inputs:
            unpack(staged, workspace)
        before = worker_artifacts.snapshot(workspace)
        script.edit(workspace)
        diff = None
        if job.workspace_commit:
            patch = scratch / "changes.patch"
            diff = worker_artifacts.git_diff(workspace, job.workspace_commit, patch, {**os.environ})
        collected = worker_artifacts.collect(workspace, before, script.limit, diff)
        frame = scratch / "artifacts.tar"
        with frame.open("wb") as out:
            for piece in worker_artifacts.pieces(worker_artifacts.members(collected, workspace)):
                out.write(piece)
        # The dispatcher removes the frame once stored; the rest goes now.
        kept = Path(tempfile.mkstemp(prefix="artifacts-", dir=self.scratch)[1])
        shutil.move(frame, kept)
        shutil.rmtree(scratch)
        return kept


def unpack(staged: WorkspaceInput, workspace: Path) -> None:
    """As the worker does, for the inputs these tests send (trusted: they made them)."""
    target = workspace / staged.path
    target.mkdir(parents=True, exist_ok=True)
    if staged.kind == "file":
        shutil.copyfile(staged.local, target / (staged.filename or "input"))
    elif staged.kind == "zip":
        with zipfile.ZipFile(staged.local) as archive:
            archive.extractall(target)
    else:
        with tarfile.open(staged.local) as archive:
            archive.extractall(target, filter="tar")
