"""Open streams and long polls are capped (per key: 429, per replica: 503, both with
Retry-After), a slot comes back when its client leaves, and a new /events starts now.
A live tower over real HTTP, real PostgreSQL, the simulated runner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest

from tests.support.live import client_for, live_tower
from tests.support.metrics import until_open_streams
from tests.support.sse import only_events
from tower.execution.simulated import SimulatedRunner
from tower.settings import Settings

DEADLINE = 30.0  # a bound on waiting for the tower, never an expectation of speed
KEY = "stream-limits-key"


def settings(database_url: str, **caps: int) -> Settings:
    return Settings(
        database_url=database_url,
        tower_runner="simulated",
        tower_api_key=KEY,
        poll_interval=0.2,
        **caps,
    )


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    capped = settings(database_url, max_streams_per_key=3, max_streams=10)
    async with live_tower(capped, SimulatedRunner()) as url, client_for(url, KEY) as client:
        yield client


async def submit(client: httpx.AsyncClient, prompt: str) -> str:
    body = {"agent_id": "caps", "engine": "claude-code", "prompt": prompt}
    response = await client.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def open_stream(
    client: httpx.AsyncClient, streams: AsyncExitStack, path: str = "/events"
) -> httpx.Response:
    """A stream held open until `streams` closes (its answer's headers received)."""
    return await streams.enter_async_context(client.stream("GET", path))


async def until_answered(client: httpx.AsyncClient, path: str) -> httpx.Response:
    """The first answer to `path` that is not a 429: a closed stream's slot comes back
    once the tower has seen its client leave, which shows nowhere else."""
    async with asyncio.timeout(DEADLINE):
        while True:
            async with client.stream("GET", path) as reply:
                if reply.status_code != 429:
                    await reply.aclose()
                    return reply
            await asyncio.sleep(0.02)


async def test_a_key_past_its_cap_gets_429_until_one_of_its_streams_ends(
    client: httpx.AsyncClient,
) -> None:
    job_id = await submit(client, "sleep 600")
    async with asyncio.timeout(DEADLINE), AsyncExitStack() as streams:
        first = await open_stream(client, streams)
        await open_stream(client, streams, f"/jobs/{job_id}/events")
        await open_stream(client, streams)
        await until_open_streams(client, {"events": 3, "wait": 0})

        for path in ("/events", f"/jobs/{job_id}/events", f"/jobs/{job_id}/wait"):
            refused = await client.get(path)
            assert refused.status_code == 429, refused.text
            assert int(refused.headers["Retry-After"]) > 0
            assert "streams" in refused.json()["detail"]
        # Other requests are not capped.
        assert (await client.get(f"/jobs/{job_id}")).status_code == 200

        await first.aclose()  # the client leaves: the tower sees the disconnect
        again = await until_answered(client, "/events")
        assert again.status_code == 200
    await until_open_streams(client, {"events": 0, "wait": 0})


async def test_a_long_poll_holds_a_slot_and_gives_it_back_when_its_client_leaves(
    client: httpx.AsyncClient,
) -> None:
    job_id = await submit(client, "sleep 600")
    async with asyncio.timeout(DEADLINE), AsyncExitStack() as streams:
        await open_stream(client, streams)
        await open_stream(client, streams)
        wait = asyncio.create_task(client.get(f"/jobs/{job_id}/wait", params={"timeout": 3600}))
        await until_open_streams(client, {"events": 2, "wait": 1})
        assert (await client.get("/events")).status_code == 429

        wait.cancel()  # the waiting client goes away; its wait had an hour left
        with pytest.raises(asyncio.CancelledError):
            await wait
        await until_open_streams(client, {"events": 2, "wait": 0})
        assert (await until_answered(client, "/events")).status_code == 200


async def test_the_replica_cap_answers_503_and_other_requests_still_answer(
    database_url: str,
) -> None:
    capped = settings(database_url, max_streams_per_key=100, max_streams=2)
    async with (
        live_tower(capped, SimulatedRunner()) as url,
        client_for(url, KEY) as client,
        asyncio.timeout(DEADLINE),
        AsyncExitStack() as streams,
    ):
        await open_stream(client, streams)
        await open_stream(client, streams)

        refused = await client.get("/events")
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["Retry-After"]) > 0
        job_id = await submit(client, "print still served")
        waited = await client.get(f"/jobs/{job_id}/wait")
        assert waited.status_code == 503  # a long poll takes a slot too
        assert (await client.get(f"/jobs/{job_id}")).status_code == 200


async def test_a_new_all_jobs_stream_starts_now_unless_asked_for_history(
    client: httpx.AsyncClient,
) -> None:
    old = await submit(client, "print old")
    assert (await client.get(f"/jobs/{old}/wait")).json()["status"] == "completed"

    async with asyncio.timeout(DEADLINE), client.stream("GET", "/events") as live:
        new = await submit(client, "print new")
        first = await anext(only_events(live))
    assert (first.data["job_id"], first.data["status"]) == (new, "pending")

    async with asyncio.timeout(DEADLINE), client.stream("GET", "/events?last_event_id=0") as past:
        async for replayed in only_events(past):
            if replayed.data["job_id"] == old:
                break
    assert replayed.id < first.id
