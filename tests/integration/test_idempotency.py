"""Idempotency-Key on POST /jobs (Stripe semantics), through real HTTP on real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests.support.live import client_for, live_tower
from tower.execution.simulated import SimulatedRunner
from tower.jobs.queries import DELETE_EXPIRED_IDEMPOTENCY_KEYS
from tower.settings import Settings

TTL_HOURS = 24
BODY = {"agent_id": "idem", "engine": "claude-code", "prompt": "sleep 3600"}


def settings_for(database_url: str) -> Settings:
    return Settings(
        database_url=database_url, tower_runner="simulated", idempotency_ttl_hours=TTL_HOURS
    )


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        live_tower(settings_for(database_url), SimulatedRunner()) as url,
        client_for(url) as client,
    ):
        yield client


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


async def post(
    client: httpx.AsyncClient, key: str, body: dict[str, object] | None = None
) -> httpx.Response:
    return await client.post("/jobs", json=body or BODY, headers={"Idempotency-Key": key})


def replayed(response: httpx.Response) -> bool:
    return response.headers.get("Idempotent-Replayed") == "true"


async def job_count(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM jobs")
    return count


async def test_same_key_and_body_replays_the_same_job(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    first = await post(client, "order-1")
    second = await post(client, "order-1")
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json() == second.json()
    assert (replayed(first), replayed(second)) == (False, True)
    assert await job_count(db) == 1


async def test_equivalent_bodies_replay(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    first = await post(client, "order-2")
    # Other key order, and defaults spelled out: the same validated request.
    same = {"prompt": BODY["prompt"], "profile": "default", "priority": 0, **BODY}
    second = await post(client, "order-2", same)
    assert replayed(second)
    assert second.json()["job_id"] == first.json()["job_id"]
    assert await job_count(db) == 1


async def test_same_key_other_body_is_422_naming_the_header(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await post(client, "order-3")
    response = await post(client, "order-3", {**BODY, "prompt": "something else"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert await job_count(db) == 1


async def test_different_keys_make_different_jobs(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    first = await post(client, "order-4")
    second = await post(client, "order-5")
    assert first.json()["job_id"] != second.json()["job_id"]
    assert not replayed(second)
    assert await job_count(db) == 2


async def test_without_a_key_every_submit_is_a_new_job(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    for _ in range(2):
        assert (await client.post("/jobs", json=BODY)).status_code == 202
    assert await job_count(db) == 2
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys") == 0


async def test_rejected_request_does_not_use_up_the_key(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    bad = await post(client, "order-6", {**BODY, "engine": "no-such-engine"})
    assert bad.status_code == 422
    good = await post(client, "order-6")
    assert good.status_code == 202
    assert not replayed(good)


async def test_expired_key_counts_as_absent(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    first = (await post(client, "order-7")).json()["job_id"]
    await db.execute(
        "UPDATE idempotency_keys SET created_at = now() - make_interval(hours => $1 + 1)",
        TTL_HOURS,
    )
    response = await post(client, "order-7", {**BODY, "prompt": "a new body is fine too"})
    assert response.status_code == 202
    assert not replayed(response)
    second = response.json()["job_id"]
    assert second != first
    assert await db.fetchval("SELECT job_id FROM idempotency_keys WHERE key = 'order-7'") == second
    again = await post(client, "order-7", {**BODY, "prompt": "a new body is fine too"})
    assert replayed(again)
    assert again.json()["job_id"] == second


async def test_delete_expired_keys_spares_live_ones(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await post(client, "old")
    await post(client, "new")
    await db.execute(
        "UPDATE idempotency_keys SET created_at = now() - make_interval(hours => $1 + 1)"
        " WHERE key = 'old'",
        TTL_HOURS,
    )
    assert await db.execute(DELETE_EXPIRED_IDEMPOTENCY_KEYS, TTL_HOURS) == "DELETE 1"
    assert await db.fetch("SELECT key FROM idempotency_keys") == [("new",)]


@pytest.mark.parametrize("key", ["k" * 256, "tab\there", "café", ""])
async def test_malformed_key_is_422_naming_the_header(
    client: httpx.AsyncClient, db: asyncpg.Connection, key: str
) -> None:
    response = await client.post(
        "/jobs", json=BODY, headers=[("Idempotency-Key", key.encode("latin-1"))]
    )
    assert response.status_code == 422
    assert ["header", "Idempotency-Key"] in [error["loc"] for error in response.json()["detail"]]
    assert await job_count(db) == 0


async def test_longest_key_is_accepted(client: httpx.AsyncClient) -> None:
    response = await post(client, "k" * 255)
    assert response.status_code == 202


async def test_concurrent_submits_on_two_replicas_make_one_job(
    database_url: str, db: asyncpg.Connection
) -> None:
    settings = settings_for(database_url)
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for _ in range(2):
            url = await stack.enter_async_context(live_tower(settings, SimulatedRunner()))
            clients.append(await stack.enter_async_context(client_for(url)))
        responses = await asyncio.gather(*(post(clients[index % 2], "race") for index in range(24)))
    assert {response.status_code for response in responses} == {202}
    assert len({response.json()["job_id"] for response in responses}) == 1
    assert sum(not replayed(response) for response in responses) == 1
    assert await job_count(db) == 1
