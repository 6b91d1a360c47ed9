"""The runner interface: what the dispatcher needs from anything that executes a job.

The dispatcher owns the queue (claim, lease, fencing, final write); a runner only
executes. Cancellation is asyncio cancellation: when a job is cancelled, or its
lease is lost, the dispatcher cancels the task running `run`, and the runner must
stop the execution (kill the container) before re-raising CancelledError.

While it runs, a runner hands the job's output to `output` as it is produced; the
dispatcher stores it as the job's log (tower/events/log.py) before the final write.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable
from uuid import UUID

FailureReason = Literal[
    "error", "timeout", "oom", "tower_lost", "result_too_large", "cancelled", "input", "output"
]
OutputStream = Literal["stdout", "stderr"]
InputKind = Literal["file", "tar", "tar.gz", "zip", "session"]


@dataclass(frozen=True)
class WorkspaceInput:
    """One upload staged on tower's side for the job: `local` is a private temporary file
    of `size` bytes, which the worker unpacks into /workspace/<path> (a file as
    <path>/<filename>). Staging (tower.workspaces) makes it; the bundle carries it."""

    path: str
    kind: InputKind
    filename: str | None
    local: pathlib.Path
    size: int


@dataclass(frozen=True)
class ClaimedJob:
    job_id: str
    agent_id: str
    engine: str
    profile: str
    request: dict[str, Any]
    attempt: int
    lease_token: UUID
    # How long it waited claimable before this claim (the claim latency metric).
    queued_seconds: float = 0.0
    # This attempt's gateway token (tower.gateway.tokens): the worker's only credential.
    gateway_token: str = field(default="", repr=False)
    # Its inputs, staged before the runner gets the job (tower/queue/dispatcher.py).
    inputs: tuple[WorkspaceInput, ...] = ()
    # The commit tower cloned into /workspace (a repository job): what the diff is against.
    workspace_commit: str | None = None


@dataclass(frozen=True)
class RunOutcome:
    succeeded: bool
    exit_code: int | None = None
    result: str | None = None
    error: str | None = None
    failure_reason: FailureReason | None = None
    usage: dict[str, Any] | None = field(default=None)
    # What the job created or changed in its workspace: a private temporary file holding
    # the worker's artifacts tar (tower/artifacts stores it), removed by whoever stores it.
    artifacts: pathlib.Path | None = None
    # The infrastructure failed, not the job (the Docker daemon gone mid-job, the worker
    # image missing): the dispatcher gives it back to the queue, its attempt not counted.
    requeue: bool = False


@dataclass(frozen=True)
class Probe:
    """One answer to "does this part work right now?", with what was seen."""

    ok: bool
    detail: str


@dataclass(frozen=True)
class RunnerHealth:
    """What /health reports of the runner, from what the runner already holds (its own
    Docker client): None where the runner does not use that part at all."""

    docker: Probe | None = None
    gateway: Probe | None = None
    egress: Probe | None = None


class Output(Protocol):
    def write(self, stream: OutputStream, data: bytes) -> None:
        """Take a piece of the job's output, in the order produced. Never blocks or
        raises; call it on the event loop's thread."""
        ...


@runtime_checkable
class Gated(Protocol):
    """A runner that can be unable to run anything for a while (its Docker daemon does
    not answer): the dispatcher claims nothing until it can again."""

    def unavailable(self) -> str | None:
        """Why no job can run now, or None when jobs can run."""
        ...

    def on_available(self, wake: Callable[[], None]) -> None:
        """Call `wake` (on the event loop) each time jobs can run again."""
        ...


class Runner(Protocol):
    async def run(self, job: ClaimedJob, output: Output) -> RunOutcome:
        """Execute the job to its end and describe how it ended. Never raises for a job's
        own failure (that is a RunOutcome with succeeded=False); raises CancelledError
        only after the execution has been stopped."""
        ...

    async def health(self) -> RunnerHealth:
        """Check the parts this runner depends on, with the clients it holds. Never raises;
        answers within a few seconds."""
        ...

    async def close(self) -> None:
        """Release whatever the runner holds (containers, clients)."""
        ...
