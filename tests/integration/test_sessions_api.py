"""Continuing a job through real HTTP against a real tower and its PostgreSQL: the turn's
session state is the real worker's (a process on this host) artifacts frame stored by
tower's own store; POST /jobs/{id}/continue answers its 4xx for a parent still pending,
one that never started, an engine that cannot resume, and a turn without state; a
continued job carries its session, parent and turn; two continues of one job are
siblings; GET /sessions/{id} and GET /jobs?session_id= list the turns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_artifacts_api import claimed
from tests.support.cli import parpaing
from tests.support.live import client_for, live_tower
from tests.support.towers import insert_job
from tests.unit.test_worker import WorkerProcess, base_spec, shell, started, workers
from tower.artifacts import store
from tower.db.pool import Pool
from tower.execution.docker.worker_stdout import WorkerStdout
from tower.execution.protocol import DONE_LINE
from tower.queue.retention import Retention
from tower.settings import Settings

__all__ = ["workers"]  # the fixture

KEY = "sessions-test-key"


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=database_url, tower_runner="simulated", tower_api_key=KEY)
    async with live_tower(settings) as url, client_for(url, KEY) as client:
        yield client


def session_frame(tmp: Path, workers: list[WorkerProcess]) -> Path:
    worker = started(tmp, workers)
    script = (
        "echo hi > notes.md; mkdir -p $HOME/.claude/projects; echo t > $HOME/.claude/projects/s"
    )
    worker.start(
        base_spec(argv=shell(script), artifact_limit=1 << 20, session_state=(".claude/projects",))
    )
    stdout = WorkerStdout(lambda _s, _d: None, 1 << 24, 2 << 30)
    assert stdout.feed(worker.finish().stdout + DONE_LINE)
    path = stdout.take_artifacts()
    assert path is not None
    return path


async def finished_turn(db: Any, pool: Pool, frame: Path | None) -> str:
    """A job that ran and completed, with the state of `frame` stored by tower's store."""
    attempt = await claimed(db)
    assert await store.store(pool, attempt, frame)
    await db.execute(
        "UPDATE jobs SET status = 'completed', started_at = now(), finished_at = now(),"
        " lease_token = NULL WHERE job_id = $1",
        attempt.job_id,
    )
    return attempt.job_id


async def test_a_continued_job_is_the_next_turn_of_its_session(
    client: httpx.AsyncClient, db: Any, pool: Pool, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    parent = await finished_turn(db, pool, session_frame(tmp_path, workers))
    body = {"prompt": "now the empty case", "max_turns": 3, "model": "sonnet"}
    first, second = await asyncio.gather(
        client.post(f"/jobs/{parent}/continue", json=body),
        client.post(f"/jobs/{parent}/continue", json={"prompt": "or this"}),
    )
    assert first.status_code == second.status_code == 202, first.text
    child = first.json()["job_id"]

    record = (await client.get(f"/jobs/{child}")).json()
    assert (record["session_id"], record["parent_job_id"], record["turn"]) == (parent, parent, 2)
    assert record["engine"] == "claude-code" and record["profile"] == "default"
    assert (record["max_turns"], record["model"]) == (3, "sonnet")
    assert record["prompt_chars"] == len("now the empty case")
    before = (await client.get(f"/jobs/{parent}")).json()
    assert (before["session_id"], before["parent_job_id"], before["turn"]) == (parent, None, 1)

    session = (await client.get(f"/sessions/{parent}")).json()
    turns = [(turn["job_id"], turn["turn"]) for turn in session["turns"]]
    assert turns[0] == (parent, 1)
    assert sorted(turns[1:]) == sorted([(child, 2), (second.json()["job_id"], 2)])  # siblings
    listed = (await client.get("/jobs", params={"session_id": parent})).json()
    assert listed["total"] == 3

    # The children run (the simulated runner), staged from the parent's state.
    for job_id in (child, second.json()["job_id"]):
        finished = await client.get(f"/jobs/{job_id}/wait", params={"timeout": 30})
        assert finished.json()["status"] == "completed", finished.text
    grandchild = await client.post(f"/jobs/{child}/continue", json={"prompt": "again"})
    # The simulated runner keeps no state, so the second turn has none to continue from.
    assert grandchild.status_code == 404, grandchild.text
    assert "no session state" in grandchild.json()["detail"]


async def test_a_continue_gets_its_4xx(client: httpx.AsyncClient, db: Any, pool: Pool) -> None:
    body = {"prompt": "more"}
    unknown = await client.post("/jobs/a-0123456789ab/continue", json=body)
    assert unknown.status_code == 404
    assert (await client.get("/sessions/a-0123456789ab")).status_code == 404

    pending = await insert_job(db, "p", delay_seconds=3600)
    answer = await client.post(f"/jobs/{pending}/continue", json=body)
    assert answer.status_code == 409 and "pending" in answer.json()["detail"]

    assert (await client.delete(f"/jobs/{pending}")).status_code == 200
    answer = await client.post(f"/jobs/{pending}/continue", json=body)
    assert answer.status_code == 409 and "before it started" in answer.json()["detail"]

    stateless = await finished_turn(db, pool, None)
    answer = await client.post(f"/jobs/{stateless}/continue", json=body)
    assert answer.status_code == 404 and "SESSION_TTL_HOURS" in answer.json()["detail"]

    await db.execute("UPDATE jobs SET engine = 'codex' WHERE job_id = $1", stateless)
    answer = await client.post(f"/jobs/{stateless}/continue", json=body)
    assert answer.status_code == 409 and "cannot resume" in answer.json()["detail"]

    extra = await client.post(f"/jobs/{stateless}/continue", json={"prompt": "x", "engine": "y"})
    assert extra.status_code == 422


async def test_retention_deletes_state_past_its_ttl_after_the_last_turn(
    client: httpx.AsyncClient,
    db: Any,
    pool: Pool,
    database_url: str,
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    parent = await finished_turn(db, pool, session_frame(tmp_path, workers))
    retention = Retention(Settings(database_url=database_url, session_ttl_hours=2), pool)
    await db.execute(
        "UPDATE jobs SET finished_at = now() - interval '1 hour' WHERE job_id = $1", parent
    )
    cleaned = await retention.clean_once()
    assert cleaned is not None and cleaned.session_states == 0

    await db.execute(
        "UPDATE jobs SET finished_at = now() - interval '3 hours' WHERE job_id = $1", parent
    )
    cleaned = await retention.clean_once()
    assert cleaned is not None and cleaned.session_states == 1
    answer = await client.post(f"/jobs/{parent}/continue", json={"prompt": "more"})
    assert answer.status_code == 404


async def test_parpaing_continue_and_session(
    client: httpx.AsyncClient, db: Any, pool: Pool, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    url = str(client.base_url)
    parent = await finished_turn(db, pool, session_frame(tmp_path, workers))
    ran = await parpaing(
        url, "continue", parent, "--prompt", "more", "--max-turns", "2", api_key=KEY
    )
    assert ran.code == 0, ran.stderr
    child = ran.stdout.strip()
    record = (await client.get(f"/jobs/{child}")).json()
    assert (record["parent_job_id"], record["max_turns"]) == (parent, 2)

    listed = await parpaing(url, "session", parent, api_key=KEY)
    assert listed.code == 0 and child in listed.stdout and parent in listed.stdout

    pending = await insert_job(db, "p", delay_seconds=3600)
    refused = await parpaing(url, "continue", pending, "--prompt", "x", api_key=KEY)
    assert refused.code != 0 and "pending" in refused.stderr
