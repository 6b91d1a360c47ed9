"""A repository job's `output`, done by tower once the agent's changes are back: the diff
committed on the job's branch in tower's clone, pushed, and a pull request opened when
asked. What came of it is the job's `published` record (its branch, commit and pull
request, or the step that failed and why)."""

from __future__ import annotations

import asyncio
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from tower.credentials import service as credentials
from tower.db.pool import Pool
from tower.errors import one_line
from tower.execution import protocol
from tower.execution.runner import ClaimedJob, RunOutcome
from tower.settings import Settings
from tower.workspaces import queries
from tower.workspaces.forge import PullRequest
from tower.workspaces.git import RepoFailed
from tower.workspaces.publish import Author, publish
from tower.workspaces.repo import SHA
from tower.workspaces.staging import Staged


def wants_output(job: ClaimedJob) -> bool:
    return bool(job.request.get("output"))


async def after_run(
    pool: Pool, settings: Settings, job: ClaimedJob, staged: Staged, outcome: RunOutcome
) -> RunOutcome:
    """The outcome once the job's output is done: unchanged when it asks for none or the
    run failed; failed as `output`, with git's or the forge's message, when a step fails
    (its artifacts and diff are kept all the same)."""
    if not wants_output(job) or not outcome.succeeded:
        return outcome
    try:
        with tempfile.TemporaryDirectory(prefix="parpaing-publish-") as scratch:
            diff = await asyncio.to_thread(_extract_diff, outcome.artifacts, Path(scratch))
            published = await publish_output(pool, settings, job, staged, diff)
    except (RepoFailed, OSError, tarfile.TarError) as error:
        why = error.message if isinstance(error, RepoFailed) else one_line(error)
        published = {"branch": None, "error": why}
        await _record(pool, job, published)
        return replace(outcome, succeeded=False, error=f"output: {why}", failure_reason="output")
    await _record(pool, job, published)
    return outcome


async def _record(pool: Pool, job: ClaimedJob, published: dict[str, Any]) -> None:
    async with pool.acquire() as connection:
        await connection.execute(queries.SET_PUBLISHED, job.job_id, job.lease_token, published)


def _extract_diff(artifacts: Path | None, scratch: Path) -> Path | None:
    """The diff the worker put in its artifacts frame, as a file; None without one."""
    if artifacts is None:
        return None
    with tarfile.open(artifacts) as archive:
        member = next(
            (m for m in archive if m.name == protocol.ARTIFACTS_DIFF and m.isfile()), None
        )
        if member is None:
            return None
        source = archive.extractfile(member)
        assert source is not None
        target = scratch / "changes.patch"
        with source, target.open("wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
    return target


async def publish_output(
    pool: Pool, settings: Settings, job: ClaimedJob, staged: Staged, diff: Path | None
) -> dict[str, Any]:
    """Push the job's changes as its `output` asks; the `published` record. Raises
    RepoFailed (the step and git's or the forge's message) when a step fails."""
    output = job.request["output"]
    if staged.repo is None:
        raise RepoFailed("the job has no cloned repository to push from")
    if diff is None or _empty(diff):
        return {"branch": None, "reason": "the agent changed nothing: no branch was pushed"}
    repo = job.request["repo"]
    credential = await _credential(pool, settings, repo.get("credential"), job.job_id)
    pull = _pull_request(output.get("pull_request"))
    ref = repo.get("ref")
    base = ref if ref and not SHA.match(ref) else None
    published = await publish(
        staged.repo.git,
        diff,
        output["branch"],
        Author(settings.publish_author_name, settings.publish_author_email),
        _message(job, pull),
        credential,
        pull,
        base,
        settings.repo_allow_private,
    )
    opened = published.pull_request
    return {
        "branch": published.branch,
        "commit": published.commit,
        "pull_request_url": opened.url if opened else None,
        "pull_request_number": opened.number if opened else None,
    }


def _empty(path: Path) -> bool:
    return path.stat().st_size == 0


async def _credential(pool: Pool, settings: Settings, name: str | None, job_id: str) -> Any:
    if not name:
        return None
    secrets_key = settings.secrets_key.get_secret_value()
    return await credentials.reveal_for_job(pool, secrets_key, name, job_id)


def _pull_request(requested: dict[str, Any] | None) -> PullRequest | None:
    if not requested:
        return None
    return PullRequest(requested["title"], requested.get("body") or "")


def _message(job: ClaimedJob, pull: PullRequest | None) -> str:
    title = pull.title if pull else f"Changes by Parpaing job {job.job_id}"
    return f"{title}\n\nParpaing job: {job.job_id} (agent {job.agent_id}, engine {job.engine})"
