"""Staging a claimed job's inputs from real PostgreSQL, and the dispatcher around it:
files streamed out chunk by chunk, handed to the runner, removed after the run; a job
whose upload is gone fails with failure_reason "input" before anything runs."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.hub import running_hub
from tests.support.rss import RssWatch
from tower.db.notify import NotifyHub
from tower.db.pool import Pool
from tower.execution.runner import ClaimedJob, Output, RunOutcome, WorkspaceInput
from tower.execution.simulated import SimulatedRunner
from tower.jobs import queries as job_queries
from tower.observability.metrics import TowerMetrics
from tower.queue.dispatcher import Dispatcher
from tower.settings import Settings
from tower.uploads import service as uploads
from tower.uploads.archive import UploadKind
from tower.workspaces import staging

DEADLINE = 15.0  # a bound on waiting for an event, never an expectation of speed
MiB = 1 << 20


async def _body(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 100_000):
        yield data[start : start + 100_000]


async def _upload(pool: Pool, data: bytes, filename: str = "blob.bin") -> str:
    settings = Settings(database_url="postgresql://unused", max_upload_bytes=8 * MiB)
    kind: UploadKind = "file"
    made = await uploads.create(pool, settings, _body(data), kind, filename, "default")
    return made.upload_id


async def _job_with(db: Any, *inputs: tuple[str, str], prompt: str = "print ran") -> str:
    job_id = f"stage-{uuid.uuid4().hex[:12]}"
    request = {
        "agent_id": "stage",
        "engine": "claude-code",
        "prompt": prompt,
        "inputs": [{"upload": upload, "path": path} for upload, path in inputs],
    }
    row = job_queries.JobRow(
        job_id, "stage", "claude-code", "default", request, 0, 1, "default", None, inputs
    )
    async with db.transaction():
        await job_queries.insert_job(db, row)
    return job_id


def _claimed(job_id: str, request: dict[str, Any]) -> ClaimedJob:
    return ClaimedJob(job_id, "stage", "claude-code", "default", request, 1, uuid.uuid4())


async def test_each_upload_is_streamed_into_its_own_private_file_in_order(
    db: Any, pool: Pool
) -> None:
    big = bytes(range(256)) * (10 * 1024) + b"tail"  # 2.5 MiB: three chunks
    first, second = await _upload(pool, big), await _upload(pool, b"small", "notes.txt")
    job_id = await _job_with(db, (first, "data"), (second, ""))
    request = {"inputs": [{"upload": first}, {"upload": second}]}

    staged = await staging.stage(pool, _claimed(job_id, request), Settings())
    try:
        assert [(one.path, one.kind, one.filename, one.size) for one in staged.inputs] == [
            ("data", "file", "blob.bin", len(big)),
            ("", "file", "notes.txt", 5),
        ]
        assert staged.inputs[0].local.read_bytes() == big
        assert staged.inputs[1].local.read_bytes() == b"small"
        assert all(one.local.stat().st_mode & 0o077 == 0 for one in staged.inputs)
    finally:
        staged.discard()
    assert not any(one.local.exists() for one in staged.inputs)


async def test_a_large_upload_is_staged_without_being_held_in_memory(db: Any, pool: Pool) -> None:
    size = 150 * MiB

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // MiB):
            yield os.urandom(MiB)

    settings = Settings(
        database_url="postgresql://unused", max_upload_bytes=size, worker_workspace_size="1g"
    )
    upload = (await uploads.create(pool, settings, body(), "file", "big.bin", "default")).upload_id
    job_id = await _job_with(db, (upload, ""))

    async with RssWatch(os.getpid()) as rss:
        staged = await staging.stage(
            pool, _claimed(job_id, {"inputs": [{"upload": upload}]}), settings
        )
    staged.discard()

    assert staged.size == size
    print(f"staging RSS +{rss.growth / MiB:.1f} MiB for a 150 MiB upload")
    assert rss.growth < 48 * MiB


class RecordingRunner:
    """The simulated runner, noting what each job's staged inputs held while it ran."""

    def __init__(self) -> None:
        self._inner = SimulatedRunner()
        self.seen: dict[str, list[tuple[WorkspaceInput, bytes]]] = {}
        self.metrics = TowerMetrics("replica-1")  # the dispatcher's

    async def run(self, job: ClaimedJob, output: Output) -> RunOutcome:
        self.seen[job.job_id] = [(one, one.local.read_bytes()) for one in job.inputs]
        return await self._inner.run(job, output)

    async def close(self) -> None:
        await self._inner.close()


@pytest.fixture
async def hub(database_url: str) -> AsyncIterator[NotifyHub]:
    async with running_hub(database_url) as hub:
        yield hub


@pytest.fixture
async def dispatching(
    database_url: str, pool: Pool, hub: NotifyHub
) -> AsyncIterator[RecordingRunner]:
    runner = RecordingRunner()
    settings = Settings(
        database_url=database_url,
        poll_interval=60,
        shutdown_grace_seconds=0,
        max_concurrent_jobs=4,  # unset (0) is fitted by the app, which this test skips
    )
    dispatcher = Dispatcher(settings, pool, hub, runner, "replica-1", runner.metrics)
    await dispatcher.start()
    yield runner
    await dispatcher.stop()


async def _finished(hub: NotifyHub, db: Any, job_id: str) -> dict[str, Any]:
    with hub.finished_event(job_id) as finished:
        async with asyncio.timeout(DEADLINE):
            while True:
                row = dict(await db.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id))
                if row["status"] in ("completed", "failed", "cancelled"):
                    return row
                await finished.wait()
                finished.clear()


def _exists(path: Path) -> bool:
    return path.exists()


async def _log(db: Any, job_id: str) -> str:
    rows = await db.fetch(
        "SELECT data FROM job_events WHERE job_id = $1 AND kind = 'log' ORDER BY seq", job_id
    )
    return "".join(str(row["data"].get("text", "")) for row in rows)


async def test_the_runner_gets_the_staged_inputs_which_go_after_the_run(
    db: Any, pool: Pool, hub: NotifyHub, dispatching: RecordingRunner
) -> None:
    upload = await _upload(pool, b"contents\n", "notes.txt")
    job_id = await _job_with(db, (upload, "in"))

    row = await _finished(hub, db, job_id)

    assert row["status"] == "completed", row
    [(staged, contents)] = dispatching.seen[job_id]
    assert (staged.path, staged.kind, staged.filename, contents) == (
        "in",
        "file",
        "notes.txt",
        b"contents\n",
    )
    assert not _exists(staged.local)
    assert "staged 1 input(s), 9 bytes" in await _log(db, job_id)
    staging_timed = ("tower_job_phase_seconds_count", {"phase": "stage"})
    assert dispatching.metrics.registry.get_sample_value(*staging_timed) == 1


async def test_a_job_whose_upload_was_deleted_fails_with_reason_input(
    db: Any, pool: Pool, hub: NotifyHub, database_url: str
) -> None:
    upload = await _upload(pool, b"gone soon")
    job_id = await _job_with(db, (upload, ""))
    await uploads.delete(pool, upload, None)
    runner = RecordingRunner()
    settings = Settings(
        database_url=database_url,
        poll_interval=60,
        shutdown_grace_seconds=0,
        max_concurrent_jobs=4,  # unset (0) is fitted by the app, which this test skips
    )
    dispatcher = Dispatcher(settings, pool, hub, runner, "replica-1")
    await dispatcher.start()
    try:
        row = await _finished(hub, db, job_id)
    finally:
        await dispatcher.stop()

    assert (row["status"], row["failure_reason"]) == ("failed", "input")
    assert f"inputs[0] (upload {upload!r}) was deleted before the job started" in row["error"]
    assert job_id not in runner.seen  # nothing ran
