"""GET /jobs/{id}/wait: woken by the finishing transaction's NOTIFY, through real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from tests.support import live
from tests.support.live import client_for, live_tower
from tower.app import create_app
from tower.execution.simulated import SimulatedRunner
from tower.settings import Settings

JOB = "waiter-00000000000a"
# The finishing write the dispatcher makes, reduced to what the waiter relies on.
FINISH = """
UPDATE jobs SET status = 'completed', finished_at = now(), exit_code = 0, result = $2
WHERE job_id = $1
"""
NOTIFY_FINISHED = "SELECT pg_notify('parpaing_job_finished', $1)"


@pytest.fixture
def apps(monkeypatch: pytest.MonkeyPatch) -> list[FastAPI]:
    """The real apps live_tower builds, kept so a test can see its waiters."""
    built: list[FastAPI] = []

    def create_and_keep(*args: Any) -> FastAPI:
        built.append(create_app(*args))
        return built[-1]

    monkeypatch.setattr(live, "create_app", create_and_keep)
    return built


@pytest.fixture
async def client(database_url: str, apps: list[FastAPI]) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=database_url, tower_runner="simulated")
    async with live_tower(settings, SimulatedRunner()) as url, client_for(url) as client:
        yield client


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


async def seed_pending(db: asyncpg.Connection, job_id: str = JOB) -> None:
    """A pending job no dispatcher will claim (claimable only in a day)."""
    await db.execute(
        """
        INSERT INTO jobs (job_id, agent_id, engine, profile, request, run_after)
        VALUES ($1, 'waiter', 'claude-code', 'default', '{}'::jsonb, now() + interval '1 day')
        """,
        job_id,
    )


async def until_parked(app: FastAPI, job_id: str, task: asyncio.Task[Any]) -> None:
    """Bounded poll until a request is parked on the job's finished event.

    Parked means it has read the row, found it live, and can now learn of the end
    only through the NOTIFY it subscribed to before reading. Nothing announces that
    moment, so this looks at the hub's subscriptions and the event's waiters.
    """
    deadline = asyncio.get_running_loop().time() + 10
    subscribed = app.state.tower.hub._finished._events
    while not any(event._waiters for event in subscribed.get(job_id, ())):
        assert not task.done(), "the wait ended before the job finished"
        assert asyncio.get_running_loop().time() < deadline, "no request waited on the job"
        await asyncio.sleep(0.01)


async def test_wait_returns_when_another_connection_finishes_the_job(
    client: httpx.AsyncClient, db: asyncpg.Connection, apps: list[FastAPI]
) -> None:
    await seed_pending(db)
    waiting = asyncio.create_task(client.get(f"/jobs/{JOB}/wait", params={"timeout": 30}))
    await until_parked(apps[0], JOB, waiting)
    async with db.transaction():
        await db.execute(FINISH, JOB, "all done")
        await db.execute(NOTIFY_FINISHED, JOB)
    response = await waiting
    assert response.status_code == 200
    record = response.json()
    assert (record["job_id"], record["status"], record["result"]) == (JOB, "completed", "all done")


async def test_wait_returns_when_the_job_is_cancelled(
    client: httpx.AsyncClient, db: asyncpg.Connection, apps: list[FastAPI]
) -> None:
    await seed_pending(db)
    waiting = asyncio.create_task(client.get(f"/jobs/{JOB}/wait", params={"timeout": 30}))
    await until_parked(apps[0], JOB, waiting)
    assert (await client.delete(f"/jobs/{JOB}")).status_code == 200
    response = await waiting
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"


async def test_wait_on_a_finished_job_returns_it_at_once(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await seed_pending(db)
    await db.execute(FINISH, JOB, "earlier")
    response = await client.get(f"/jobs/{JOB}/wait", params={"timeout": 30})
    assert response.status_code == 200
    assert response.json()["result"] == "earlier"


async def test_wait_times_out_with_408(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await seed_pending(db)
    response = await client.get(f"/jobs/{JOB}/wait", params={"timeout": 0.2})
    assert response.status_code == 408
    assert JOB in response.json()["detail"]


async def test_notice_without_a_terminal_state_keeps_waiting(
    client: httpx.AsyncClient, db: asyncpg.Connection, apps: list[FastAPI]
) -> None:
    await seed_pending(db)
    waiting = asyncio.create_task(client.get(f"/jobs/{JOB}/wait", params={"timeout": 1}))
    await until_parked(apps[0], JOB, waiting)
    await db.execute(NOTIFY_FINISHED, JOB)  # a hint only: the row is still pending
    response = await waiting
    assert response.status_code == 408


@pytest.mark.parametrize("value", ["0", "-1", "3601", "soon", "nan"])
async def test_wait_timeout_out_of_range_is_422(
    client: httpx.AsyncClient, db: asyncpg.Connection, value: str
) -> None:
    await seed_pending(db)
    response = await client.get(f"/jobs/{JOB}/wait", params={"timeout": value})
    assert response.status_code == 422
    assert ["query", "timeout"] in [error["loc"] for error in response.json()["detail"]]


async def test_wait_for_a_job_the_dispatcher_runs(client: httpx.AsyncClient) -> None:
    submitted = await client.post(
        "/jobs", json={"agent_id": "runner", "engine": "claude-code", "prompt": "print hi"}
    )
    job_id = submitted.json()["job_id"]
    response = await client.get(f"/jobs/{job_id}/wait", params={"timeout": 60})
    assert response.status_code == 200
    record = response.json()
    assert (record["status"], record["exit_code"], record["result"]) == ("completed", 0, "hi")
    assert record["attempt"] == 1
