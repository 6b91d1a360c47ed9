from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support.live import client_for, live_tower
from tests.support.metrics import open_streams, samples, until_open_streams
from tower.db.embedded import LocalPostgres
from tower.settings import Settings

UNREACHABLE_DOCKER = "unix:///nonexistent/docker.sock"


def simulated(database_url: str, tower_id: str = "") -> Settings:
    return Settings(database_url=database_url, tower_runner="simulated", tower_id=tower_id)


@pytest.fixture
def no_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", UNREACHABLE_DOCKER)


async def get(base_url: str, path: str) -> httpx.Response:
    async with client_for(base_url) as client:
        return await client.get(path)


# --- /health -------------------------------------------------------------------------


async def test_health_ok_with_database_up(database_url: str, no_docker: None) -> None:
    async with live_tower(simulated(database_url)) as url:
        response = await get(url, "/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"db", "docker", "pool", "gateway", "egress", "providers"}
    assert body["checks"]["db"] == "ok"
    # With the simulated runner Docker is reported but not required.
    assert body["checks"]["docker"].startswith("error:")
    assert body["docker_host"] is None  # a simulated runner runs on no Docker host


async def test_health_degraded_when_docker_runner_has_no_docker(
    database_url: str, no_docker: None
) -> None:
    async with live_tower(Settings(database_url=database_url, tower_runner="docker")) as url:
        response = await get(url, "/health")
    assert response.status_code == 503
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["db"] == "ok"


@pytest.fixture
async def private_server(tmp_path: Path) -> AsyncIterator[LocalPostgres]:
    server = await asyncio.to_thread(LocalPostgres(tmp_path / "pgdata").start)
    yield server
    await asyncio.to_thread(server.stop, "immediate")


async def test_health_degraded_while_database_is_down(
    private_server: LocalPostgres, no_docker: None
) -> None:
    async with live_tower(simulated(private_server.url)) as url:
        assert (await get(url, "/health")).status_code == 200
        await asyncio.to_thread(private_server.stop, "immediate")
        down = await get(url, "/health")
        await asyncio.to_thread(private_server.start)
        back = await get(url, "/health")
    assert down.status_code == 503
    assert down.json()["status"] == "degraded"
    assert down.json()["checks"]["db"].startswith("error:")
    assert back.status_code == 200, back.json()


# --- /metrics ------------------------------------------------------------------------

INSERT_JOB = """
INSERT INTO jobs (job_id, agent_id, engine, profile, status, request, created_at, run_after,
                  lease_until)
VALUES ($1, 'metrics', 'claude-code', 'default', $2, '{}'::jsonb,
        now() - make_interval(secs => $3), now() + interval '1 hour', now() + interval '1 hour')
"""


async def insert_jobs(database_url: str, rows: list[tuple[str, float]]) -> None:
    # run_after and lease_until lie in the future, so no dispatcher or reaper touches them.
    connection = await asyncpg.connect(database_url)
    try:
        for status, age in rows:
            await connection.execute(INSERT_JOB, f"metrics-{uuid.uuid4().hex[:12]}", status, age)
    finally:
        await connection.close()


async def test_metrics_agree_with_the_database(database_url: str) -> None:
    rows = [("pending", 100.0), ("pending", 5.0), ("running", 1.0)]
    rows += [("completed", 1.0)] * 3 + [("failed", 1.0)] * 2
    await insert_jobs(database_url, rows)
    async with live_tower(simulated(database_url, tower_id="replica-a")) as url:
        response = await get(url, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert all(name.startswith("tower_") for name, _ in found)
    expected = {"pending": 2, "running": 1, "completed": 3, "failed": 2, "cancelled": 0}
    for status, count in expected.items():
        assert found[("tower_jobs", (("status", status),))] == count
    assert found[("tower_queue_depth", ())] == 2
    assert 100 <= found[("tower_queue_oldest_age_seconds", ())] < 1000
    info = [labels for name, labels in found if name == "tower_info"]
    assert ("replica", "replica-a") in info[0]


async def test_metrics_of_an_empty_queue(database_url: str) -> None:
    async with live_tower(simulated(database_url)) as url:
        found = samples((await get(url, "/metrics")).text)
    assert found[("tower_queue_depth", ())] == 0
    assert found[("tower_queue_oldest_age_seconds", ())] == 0


async def test_two_towers_in_one_process_keep_their_own_registry(database_url: str) -> None:
    async with (
        live_tower(simulated(database_url, tower_id="one")) as first,
        live_tower(simulated(database_url, tower_id="two")) as second,
    ):
        one = (await get(first, "/metrics")).text
        two = (await get(second, "/metrics")).text
        one_again = (await get(first, "/metrics")).text
    assert 'replica="one"' in one and 'replica="two"' not in one
    assert 'replica="two"' in two and 'replica="one"' not in two
    assert one_again.count("tower_info{") == 1


async def test_open_long_polls_and_event_streams_are_counted_while_held(
    database_url: str,
) -> None:
    job_id = f"metrics-{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(INSERT_JOB, job_id, "pending", 0.0)
    finally:
        await connection.close()
    async with live_tower(simulated(database_url)) as url, client_for(url) as client:
        assert await open_streams(client) == {"wait": 0, "events": 0}
        wait = asyncio.create_task(client.get(f"/jobs/{job_id}/wait", params={"timeout": 600}))
        async with client.stream("GET", f"/jobs/{job_id}/events") as stream:
            await until_open_streams(client, {"wait": 1, "events": 1})
            assert (await client.delete(f"/jobs/{job_id}")).status_code == 200
            assert (await wait).json()["status"] == "cancelled"
            assert b'"cancelled"' in await stream.aread()
        await until_open_streams(client, {"wait": 0, "events": 0})
